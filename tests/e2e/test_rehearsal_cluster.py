"""The cluster rehearsal, end to end: `./bake rehearse --workers 2` on the AMI the
single-instance rehearsal (test_rehearsal.py, just before this module) built."""

from __future__ import annotations

import dataclasses
import datetime
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_ami.clouds import InstanceRecord, autoscaling, cluster_ports
from airflow_ami.clouds.local import LocalCloud
from airflow_ami.driver.instance import FANOUT_DAG, FIRSTBOOT_UNIT, Instance, layout
from airflow_ami.image.record import Baked
from airflow_ami.lifecycle import image_of, reusable_ami
from airflow_ami.seam import contract
from airflow_ami.settings import LaunchSettings, load
from tests.e2e.conftest import bake, driven, our_leftovers
from tests.infra.test_cluster import reaches, running_tis, secret_digests

PHASES = ("launch", "verify", "teardown")


def test_rehearse_a_controller_and_two_workers() -> None:
    result = bake("rehearse", "--workers", "2", "--worker-concurrency", "4", "--", "-rA")
    assert result.returncode == 0, "rehearse --workers 2 failed; its output is above"
    assert "rehearse: passed" in result.stdout
    assert "rehearse: reusing ami-" in result.stdout, "the cluster rehearsal baked instead of reusing the AMI"
    for phase in PHASES:
        assert f"rehearse: --- {phase}" in result.stdout
    assert (
        "PASSED tests/infra/test_cluster.py::test_a_fan_out_spreads_over_the_workers_and_overlaps"
        in result.stdout
    )
    assert our_leftovers() == []


# A worker launched while tasks wait in the queue takes some within this many seconds.
SCALE_OUT_BOUND = 300
# After a DAG run, its figures are in CloudWatch within this many seconds (issue: 120).
METRICS_BOUND = 120


@dataclasses.dataclass
class Cluster:
    cloud: LocalCloud
    settings: LaunchSettings
    image: Baked
    controller: Instance

    def launch(self, role: str, cluster: str | None = None, user_data: str | None = None) -> InstanceRecord:
        settings = dataclasses.replace(self.settings, role=role, cluster=cluster or self.settings.cluster)
        return self.cloud.launch(settings, self.image, user_data=user_data)


@pytest.fixture(scope="module")
def scale_out() -> Iterator[Cluster]:
    """A controller and one worker of cluster scale-out, on the last rehearsal's AMI."""
    settings = load(LaunchSettings, cli={"cloud": "local"})
    ami = reusable_ami(settings)
    assert ami, "no AMI of the single-instance rehearsal to reuse"
    cloud = LocalCloud()
    image = image_of(settings, ami)
    cluster = dataclasses.replace(settings, cluster="scale-out", worker_concurrency=2)
    group = autoscaling.worker_group_name(cluster.cluster)
    try:
        controller = driven(cloud.launch(dataclasses.replace(cluster, role="controller"), image))
        yield Cluster(cloud, cluster, image, controller)
    finally:
        removed = cloud.teardown(settings)
        assert our_leftovers() == []
    assert autoscaling.policy_name(group) in removed and group in removed, f"teardown removed {removed}"


def first_boot_ended(host: Instance, timeout: float = 400) -> str:
    """Wait until first boot has succeeded or failed; returns its unit's state."""
    deadline = time.monotonic() + timeout
    while (state := host.sh(f"systemctl is-active {FIRSTBOOT_UNIT}").stdout.strip()) not in (
        "active",
        "failed",
    ):
        assert time.monotonic() < deadline, host.sh(f"journalctl -u {FIRSTBOOT_UNIT} -n 40").stdout
        time.sleep(3)
    return state


def task_log(controller: Instance, run_id: str, ti: dict[str, Any]) -> str:
    path = (
        f"/api/v2/dags/{FANOUT_DAG}/dagRuns/{run_id}/taskInstances/{ti['task_id']}/logs/"
        f"{ti['try_number']}?full_content=true&map_index={ti.get('map_index', -1)}"
    )
    status, body = controller.api("GET", path)
    return json.dumps(body) if status == 200 else f"HTTP {status}"


def test_a_worker_added_while_tasks_wait_takes_them_and_one_scaled_in_while_they_run_kills_none(
    scale_out: Cluster,
) -> None:
    """Scale out to two workers while tasks wait; once the new one runs tasks, scale in to one
    (the newest leaves: EC2's lifecycle hook path): every task succeeds on its first try and
    every log, the departed worker's too, is read through the controller's API from S3."""
    controller = scale_out.controller
    scale_out.launch("worker")
    state = controller.wait_healthy(300)
    assert state["healthy"], controller.health_message(state, "the controller after launch")
    with controller.in_the_bundle(FANOUT_DAG):
        run_id = controller.trigger(FANOUT_DAG, {"n": 8, "seconds": 20})
        running_tis(controller, FANOUT_DAG, run_id)
        started = time.monotonic()
        before = {i.instance_id for i in scale_out.cloud.instances(scale_out.settings)}
        scale_out.cloud.scale(scale_out.settings, 2)
        (second,) = [i for i in scale_out.cloud.instances(scale_out.settings) if i.instance_id not in before]
        taken: list[dict[str, Any]] = []
        while not taken and time.monotonic() - started < SCALE_OUT_BOUND:
            time.sleep(3)
            taken = [
                t for t in running_tis(controller, FANOUT_DAG, run_id) if t["hostname"] == second.address
            ]
        took = time.monotonic() - started
        print(f"scale-out: the new worker took a queued task {took:.0f} s after its launch began")
        assert taken, f"the worker launched at {second.address} took no queued task in {SCALE_OUT_BOUND} s"
        leaving = time.monotonic()
        scale_out.cloud.scale(scale_out.settings, 1)
        print(
            f"scale-in: {second.instance_id} left {time.monotonic() - leaving:.0f} s after the scale began,"
            f" {len(taken)} of its tasks running then"
        )
        workers = [i for i in scale_out.cloud.instances(scale_out.settings) if i.role == "worker"]
        assert second.instance_id not in {w.instance_id for w in workers} and len(workers) == 1, workers
        run = controller.wait_run(FANOUT_DAG, run_id)
        assert run["state"] == "success", controller.run_summary(run)
    tis = run["task_instances"]
    retried = [(t["task_id"], t.get("map_index"), t["try_number"]) for t in tis if t["try_number"] != 1]
    assert all(t["state"] == "success" for t in tis) and not retried, controller.run_summary(run)
    on_second = [t for t in tis if t["hostname"] == second.address]
    assert len(on_second) >= len(taken), "the departed worker's tasks are in the run"
    unread = {
        f"{t['task_id']}[{t.get('map_index')}]@{t['hostname']}": log
        for t in tis
        if "Returned value" not in (log := task_log(controller, run_id, t))
    }
    assert not unread, f"task logs not readable through the controller's API: {unread}"
    from_s3 = task_log(controller, run_id, on_second[0])
    assert "s3://" in from_s3, f"the departed worker's log was not read from S3: {from_s3[:600]}"


def test_metrics_reach_cloudwatch_per_instance_and_the_group_scales_on_queue_depth(
    scale_out: Cluster,
) -> None:
    """After a DAG run, each instance's figures and the cluster's queue depth are in moto's
    CloudWatch (the shipper flushes every minute); the group has its hook and its policy."""
    controller = scale_out.controller
    since = datetime.datetime.now(datetime.UTC)
    with controller.in_the_bundle(FANOUT_DAG):
        run = controller.wait_run(FANOUT_DAG, controller.trigger(FANOUT_DAG, {"n": 2, "seconds": 1}))
    assert run["state"] == "success", controller.run_summary(run)
    watch = scale_out.cloud.client(scale_out.settings, "cloudwatch")

    def successes_since_the_run() -> float:
        listed = watch.list_metrics(Namespace=contract.METRICS_NAMESPACE, MetricName="TaskSuccesses")[
            "Metrics"
        ]
        return sum(
            point["Sum"]
            for metric in listed
            for point in watch.get_metric_statistics(
                Namespace=contract.METRICS_NAMESPACE,
                MetricName="TaskSuccesses",
                Dimensions=metric["Dimensions"],
                StartTime=since,
                EndTime=datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=1),
                Period=60,
                Statistics=["Sum"],
            )["Datapoints"]
        )

    wanted = {
        "TaskSuccesses",
        "SchedulerHeartbeat",
        "CPUUtilization",
        "MemoryUtilization",
        "BrokerQueueDepth",
    }
    deadline, found = time.monotonic() + METRICS_BOUND, {}
    while time.monotonic() < deadline:
        listed = watch.list_metrics(Namespace=contract.METRICS_NAMESPACE)["Metrics"]
        found = {(m["MetricName"], tuple(sorted(d["Name"] for d in m["Dimensions"]))) for m in listed}
        per_instance = {name for name, dims in found if dims == ("InstanceId", "Role")}
        cluster_depth = ("BrokerQueueDepth", (contract.CLUSTER_DIMENSION,)) in found
        if per_instance >= wanted - {"BrokerQueueDepth"} and cluster_depth and successes_since_the_run() >= 2:
            break
        time.sleep(5)
    print(f"metrics in CloudWatch: {sorted(found)}")
    assert per_instance >= wanted - {"BrokerQueueDepth"}, (
        f"missing {wanted - per_instance} within {METRICS_BOUND} s"
    )
    assert cluster_depth, "BrokerQueueDepth by Cluster alone: what the scaling policy tracks"
    assert successes_since_the_run() >= 2, (
        f"the run's 2 task successes not in CloudWatch within {METRICS_BOUND} s"
    )
    roles = {
        d["Value"]
        for m in watch.list_metrics(Namespace=contract.METRICS_NAMESPACE, MetricName="CPUUtilization")[
            "Metrics"
        ]
        for d in m["Dimensions"]
        if d["Name"] == "Role"
    }
    assert roles == {"controller", "worker"}, f"CPU of {roles}: the worker ships its own too"
    group = autoscaling.worker_group_name(scale_out.settings.cluster)
    asg = scale_out.cloud.client(scale_out.settings, "autoscaling")
    (policy,) = asg.describe_policies(AutoScalingGroupName=group)["ScalingPolicies"]
    assert policy["PolicyType"] == "TargetTrackingScaling", policy
    (hook,) = asg.describe_lifecycle_hooks(AutoScalingGroupName=group)["LifecycleHooks"]
    assert hook["LifecycleHookName"] == contract.LIFECYCLE_HOOK, hook


def test_two_clusters_share_no_secret_and_no_network(scale_out: Cluster) -> None:
    other = driven(scale_out.launch("controller", cluster="other"))
    assert first_boot_ended(other) == "active", other.sh(f"journalctl -u {FIRSTBOOT_UNIT} -n 40").stdout
    ours, theirs = secret_digests(scale_out.controller), secret_digests(other)
    shared = sorted(k for k, v in ours.items() if theirs.get(k) == v)
    assert ours and not shared, f"clusters scale-out and other share {shared}"
    address = scale_out.controller.check("hostname -I").split()[0]
    closed = {port: reaches(other, address, port) for port in cluster_ports(scale_out.image)}
    assert not any(closed.values()), f"another cluster's controller reaches ours: {closed}"


def test_bad_user_data_fails_first_boot_and_joins_nothing(scale_out: Cluster) -> None:
    good = {
        "role": "worker",
        "cluster": "scale-out",
        "controller": "10.0.0.1",
        "dags_s3_uri": "s3://bucket/dags",
    }
    bad = json.dumps({**good, "worker_concurrency": "many"})
    node = driven(scale_out.launch("worker", user_data=bad))
    assert first_boot_ended(node) == "failed"
    lines = node.check(f"journalctl -u {FIRSTBOOT_UNIT} -o cat | grep 'user data'").splitlines()
    assert len(lines) == 1 and "worker_concurrency" in lines[0], f"one line naming the key: {lines}"
    shown = node.check(f"systemctl show -p ExecMainStatus -p NRestarts {FIRSTBOOT_UNIT}")
    status = dict(line.split("=", 1) for line in shown.splitlines())
    assert status == {"ExecMainStatus": str(layout.BAD_USER_DATA_EXIT), "NRestarts": "0"}, status
    assert node.sh(f"ls -A {layout.ROLE_DIR}").stdout.strip() == "", "a role marker after bad user data"
    started = [
        u for u in layout.SERVICE_UNITS if node.sh(f"systemctl is-active {u}").stdout.strip() == "active"
    ]
    assert started == [], f"units started after bad user data: {started}"
