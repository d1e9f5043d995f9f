"""A cluster's workers as an EC2 Auto Scaling group, the same on both clouds.

aws.py makes the group on AWS, local/cloud.py in moto (whose Auto Scaling the local
cloud completes with lifecycle hooks: local/moto_lifecycle.py); both go through this
module, so a worker leaves the same way on both:

- The group is made with its termination lifecycle hook (contract.LIFECYCLE_HOOK), so no
  worker exists without it. A leaving worker reads Terminated from IMDS, stops taking
  tasks, lets its running ones finish, puts their logs in S3 and completes the action
  (scripts/provisioning/running/leave.py); the hook waits the worker unit's stop
  timeout and contract.LEAVE_MARGIN_SECONDS more, then lets it go anyway (CONTINUE).
- A target-tracking policy keeps the broker's queue depth per worker in service at the
  worker concurrency: the controller ships the depth (scripts/provisioning/running/metrics.py),
  the group its in-service count.
- A scale is watched until the group has what was asked and the leaving workers are gone,
  each reported with how long it took and whether it completed its action.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, TextIO

from airflow_ami.seam import contract, layout

TERMINATING = "autoscaling:EC2_INSTANCE_TERMINATING"
IN_SERVICE = "InService"
# Airflow's [celery] worker_concurrency when user data names none.
AIRFLOW_DEFAULT_WORKER_CONCURRENCY = 16
# Past the hook's timeout: for EC2 to terminate a worker and the group to drop it.
TERMINATE_MARGIN = 300.0


class ScalingError(RuntimeError):
    """A scale did not come to what was asked; the message says where to look."""


def worker_group_name(cluster: str) -> str:
    """The cluster's Auto Scaling group: one per cluster, as its secrets and metrics are."""
    return f"airflow-ami-{cluster}-workers"


def policy_name(group: str) -> str:
    return f"{group}-queue-depth"


def hook_timeout() -> int:
    """How long a leaving worker may take: its unit's warm shutdown, then its logs and the call."""
    return int(layout.WORKER_SERVICE["stop_timeout"]) + contract.LEAVE_MARGIN_SECONDS


def create_worker_group(
    autoscaling: Any,
    name: str,
    *,
    launch_template: str,
    sizes: tuple[int, int, int],
    placement: Mapping[str, Any],
    tags: list[dict[str, Any]],
) -> None:
    """The group with its termination hook; `sizes`: (MinSize, DesiredCapacity, MaxSize);
    `placement`: its VPCZoneIdentifier or AvailabilityZones."""
    low, desired, high = sizes
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName=name,
        LaunchTemplate={"LaunchTemplateId": launch_template, "Version": "$Latest"},
        MinSize=low,
        MaxSize=high,
        DesiredCapacity=desired,
        LifecycleHookSpecificationList=[
            {
                "LifecycleHookName": contract.LIFECYCLE_HOOK,
                "LifecycleTransition": TERMINATING,
                "HeartbeatTimeout": hook_timeout(),
                "DefaultResult": "CONTINUE",
            }
        ],
        Tags=tags,
        **placement,
    )


def _average(index: int, namespace: str, metric: str, dimension: tuple[str, str]) -> dict[str, Any]:
    """One metric of a metric-math query, m<index>: its per-period average."""
    name, value = dimension
    stat = {
        "Metric": {
            "Namespace": namespace,
            "MetricName": metric,
            "Dimensions": [{"Name": name, "Value": value}],
        },
        "Stat": "Average",
    }
    return {"Id": f"m{index}", "MetricStat": stat, "ReturnData": False}


def put_queue_depth_policy(autoscaling: Any, group: str, cluster: str, worker_concurrency: int) -> str:
    """Target tracking of the broker's queue depth per worker in service (metric math), at
    one worker's concurrency; returns the policy's name. A group of its own: the caller
    records the group before this (a failure here leaves nothing unrecorded)."""
    name = policy_name(group)
    # The policy divides by GroupInServiceInstances, which a group publishes only when asked.
    autoscaling.enable_metrics_collection(
        AutoScalingGroupName=group, Metrics=["GroupInServiceInstances"], Granularity="1Minute"
    )
    metrics = [
        _average(
            1, contract.METRICS_NAMESPACE, contract.QUEUE_DEPTH_METRIC, (contract.CLUSTER_DIMENSION, cluster)
        ),
        _average(2, "AWS/AutoScaling", "GroupInServiceInstances", ("AutoScalingGroupName", group)),
        {
            "Id": "e1",
            "Expression": "m1 / m2",
            "Label": "queued tasks per worker in service",
            "ReturnData": True,
        },
    ]
    autoscaling.put_scaling_policy(
        AutoScalingGroupName=group,
        PolicyName=name,
        PolicyType="TargetTrackingScaling",
        TargetTrackingConfiguration={
            "CustomizedMetricSpecification": {"Metrics": metrics},
            "TargetValue": float(worker_concurrency or AIRFLOW_DEFAULT_WORKER_CONCURRENCY),
        },
    )
    return name


def delete_policy(autoscaling: Any, group: str, name: str) -> None:
    """The policy, if the group still has it (its alarms go with it)."""
    if autoscaling.describe_policies(AutoScalingGroupName=group, PolicyNames=[name])["ScalingPolicies"]:
        autoscaling.delete_policy(AutoScalingGroupName=group, PolicyName=name)


def delete_hook(autoscaling: Any, group: str, name: str) -> None:
    """The lifecycle hook, if the group still has it."""
    found = autoscaling.describe_lifecycle_hooks(AutoScalingGroupName=group, LifecycleHookNames=[name])
    if found["LifecycleHooks"]:
        autoscaling.delete_lifecycle_hook(AutoScalingGroupName=group, LifecycleHookName=name)


def described(autoscaling: Any, group: str) -> dict[str, Any]:
    found = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[group])["AutoScalingGroups"]
    if not found:
        raise ScalingError(
            f"no Auto Scaling group {group}: launch the cluster again (`./bake launch --workers N`)"
        )
    return dict(found[0])


def widened(group: Mapping[str, Any], count: int) -> dict[str, int]:
    """MinSize/MaxSize that must move for the group to hold `count` (none when it already can)."""
    bounds = {}
    if count < group["MinSize"]:
        bounds["MinSize"] = count
    if count > group["MaxSize"]:
        bounds["MaxSize"] = count
    return bounds


@dataclass(frozen=True)
class Departure:
    """A worker that left the group during a scale."""

    instance_id: str
    seconds: float
    # completed: it completed its lifecycle action; timed out: the hook let it go after its
    # timeout; no hook: the group terminated it at once.
    outcome: str

    def line(self) -> str:
        how = {
            "completed": "completed its lifecycle action",
            "timed out": "did not complete its lifecycle action: the hook let it go after its timeout",
            "no hook": "terminated at once: the group has no lifecycle hook",
        }[self.outcome]
        return f"{self.instance_id} left after {self.seconds:.0f} s ({how})"


def _heartbeat_timeout(autoscaling: Any, group: str) -> int:
    """The group's terminating hook's timeout, 0 when it has none (a group of an older launch)."""
    hooks = autoscaling.describe_lifecycle_hooks(AutoScalingGroupName=group)["LifecycleHooks"]
    return max(
        (int(h["HeartbeatTimeout"]) for h in hooks if h["LifecycleTransition"] == TERMINATING), default=0
    )


def wait_until_scaled(
    autoscaling: Any,
    group: str,
    count: int,
    before: Collection[str],
    *,
    out: TextIO,
    poll: float,
    on_left: Callable[[Departure], None] = lambda departure: None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> list[Departure]:
    """Until `group` has `count` instances in service and none leaving, with a line at each
    change; `before`: its instances when the scale began, each of which that leaves is
    reported (and handed to `on_left`) once gone. Bounded by the hook's timeout and
    TERMINATE_MARGIN."""
    timeout = _heartbeat_timeout(autoscaling, group)
    started = clock()
    departures: dict[str, Departure] = {}
    last = ""
    while True:
        states = {i["InstanceId"]: i["LifecycleState"] for i in described(autoscaling, group)["Instances"]}
        waited = clock() - started
        for instance_id in before:
            if instance_id not in states and instance_id not in departures:
                outcome = "no hook" if not timeout else "completed" if waited < timeout else "timed out"
                departures[instance_id] = Departure(instance_id, waited, outcome)
                out.write(f"scale: {departures[instance_id].line()}\n")
                on_left(departures[instance_id])
        serving = sorted(i for i, state in states.items() if state == IN_SERVICE)
        leaving = sorted(i for i, state in states.items() if state.startswith("Terminating"))
        summary = f"{len(serving)} of {count} workers in service" + (
            f", leaving: {', '.join(f'{i} ({states[i]})' for i in leaving)}" if leaving else ""
        )
        if summary != last:
            out.write(f"scale: {group}: {summary} ({waited:.0f} s)\n")
            out.flush()
            last = summary
        if len(serving) == count and not leaving:
            return list(departures.values())
        if waited > timeout + TERMINATE_MARGIN:
            raise ScalingError(
                f"{group} still has {summary} after {waited:.0f} s: see its activity"
                f" (`aws autoscaling describe-scaling-activities --auto-scaling-group-name {group}`)"
                f" and the leaving workers' `journalctl -u {layout.LEAVE_UNIT}`"
            )
        sleep(poll)
