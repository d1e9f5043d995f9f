"""The local cloud's EC2 Auto Scaling: moto with termination lifecycle hooks as AWS has them
(moto_lifecycle.py), the group both clouds make (clouds/autoscaling.py), and the local
cloud's scale-in (cloud.scale_in) against it. moto in-process (the `aws` fixture)."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import pytest
from moto.autoscaling.models import autoscaling_backends
from moto.core import DEFAULT_ACCOUNT_ID

from airflow_ami.clouds import autoscaling
from airflow_ami.clouds.local import (
    cloud,
    container,
    moto_lifecycle,  # (it patches moto as it loads)
)
from airflow_ami.seam import contract

# moto plays EC2 and Auto Scaling, and some tests wait for a hook's timeout.
pytestmark = pytest.mark.slow

REGION = "eu-west-1"
GROUP = autoscaling.worker_group_name("analytics")
HOOK = contract.LIFECYCLE_HOOK


@pytest.fixture
def asg(aws: Any) -> Any:
    return boto3.client("autoscaling", region_name=REGION)


def ec2() -> Any:
    return boto3.client("ec2", region_name=REGION)


def group_of(asg: Any, workers: int = 2, *, hook_timeout: int = 0, max_size: int = 8) -> list[str]:
    """GROUP as the local cloud makes it, with `workers` instances joined to it; with
    `hook_timeout`, its hook is put again with that timeout (a test's short one)."""
    image = ec2().describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    template = ec2().create_launch_template(
        LaunchTemplateName=GROUP, LaunchTemplateData={"ImageId": image, "InstanceType": "t3.large"}
    )["LaunchTemplate"]["LaunchTemplateId"]
    autoscaling.create_worker_group(
        asg,
        GROUP,
        launch_template=template,
        sizes=(0, 0, max_size),
        placement={"AvailabilityZones": [f"{REGION}a"]},
        tags=[],
    )
    if hook_timeout:
        asg.put_lifecycle_hook(
            AutoScalingGroupName=GROUP,
            LifecycleHookName=HOOK,
            LifecycleTransition=autoscaling.TERMINATING,
            HeartbeatTimeout=hook_timeout,
            DefaultResult="CONTINUE",
        )
    reservation = ec2().run_instances(ImageId=image, MinCount=workers, MaxCount=workers)
    ids = [i["InstanceId"] for i in reservation["Instances"]]
    for instance_id in ids:
        cloud.join_group(asg, GROUP, instance_id)
    return ids


def states(asg: Any) -> dict[str, str]:
    (group,) = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[GROUP])["AutoScalingGroups"]
    return {i["InstanceId"]: i["LifecycleState"] for i in group["Instances"]}


def ec2_state(instance_id: str) -> str:
    (reservation,) = ec2().describe_instances(InstanceIds=[instance_id])["Reservations"]
    return str(reservation["Instances"][0]["State"]["Name"])


def complete(asg: Any, instance_id: str, hook: str = HOOK) -> None:
    asg.complete_lifecycle_action(
        AutoScalingGroupName=GROUP,
        LifecycleHookName=hook,
        InstanceId=instance_id,
        LifecycleActionResult="CONTINUE",
    )


def test_joined_workers_are_in_service_and_moto_starts_or_stops_none(asg: Any) -> None:
    ids = group_of(asg, max_size=1)
    (group,) = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[GROUP])["AutoScalingGroups"]
    assert states(asg) == dict.fromkeys(ids, "InService")
    assert (group["MinSize"], group["DesiredCapacity"], group["MaxSize"]) == (0, 2, 2), "full: Max grew"
    running = [i for r in ec2().describe_instances()["Reservations"] for i in r["Instances"]]
    assert sorted(i["InstanceId"] for i in running) == sorted(ids), "moto launched none of its own"


def test_a_terminated_member_waits_on_the_hook_until_its_action_is_completed(asg: Any) -> None:
    staying, leaving = group_of(asg)
    asg.terminate_instance_in_auto_scaling_group(InstanceId=leaving, ShouldDecrementDesiredCapacity=True)
    assert states(asg) == {staying: "InService", leaving: "Terminating:Wait"}
    (group,) = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[GROUP])["AutoScalingGroups"]
    assert group["DesiredCapacity"] == 1 and ec2_state(leaving) == "running"
    for instance_id, hook in ((leaving, "another-hook"), (staying, HOOK)):
        with pytest.raises(botocore.exceptions.ClientError, match="No active Lifecycle Action found") as err:
            complete(asg, instance_id, hook)
        assert err.value.response["Error"]["Code"] == "ValidationError"
    assert states(asg)[leaving] == "Terminating:Wait", "a refused completion lets nothing go"
    complete(asg, leaving)
    assert states(asg) == {staying: "InService"} and ec2_state(leaving) == "terminated"
    with pytest.raises(botocore.exceptions.ClientError, match="No active Lifecycle Action found"):
        complete(asg, leaving)


def test_an_action_completes_with_its_own_token_and_no_other(asg: Any) -> None:
    staying, leaving = group_of(asg, workers=3)[1:]
    for instance_id in (staying, leaving):
        asg.terminate_instance_in_auto_scaling_group(
            InstanceId=instance_id, ShouldDecrementDesiredCapacity=True
        )
    backend = autoscaling_backends[DEFAULT_ACCOUNT_ID][REGION]
    token = moto_lifecycle.action_token(backend, leaving)
    for wrong in (
        {"LifecycleActionToken": "00000000-0000-4000-8000-000000000000"},
        {"InstanceId": staying, "LifecycleActionToken": token},
    ):
        with pytest.raises(botocore.exceptions.ClientError, match="No active Lifecycle Action found"):
            asg.complete_lifecycle_action(
                AutoScalingGroupName=GROUP, LifecycleHookName=HOOK, LifecycleActionResult="CONTINUE", **wrong
            )
    assert states(asg)[leaving] == "Terminating:Wait"
    asg.complete_lifecycle_action(
        AutoScalingGroupName=GROUP,
        LifecycleHookName=HOOK,
        LifecycleActionResult="CONTINUE",
        LifecycleActionToken=token,
    )
    assert leaving not in states(asg) and ec2_state(leaving) == "terminated"
    assert states(asg)[staying] == "Terminating:Wait", "another's action is left as it was"


def test_a_wait_past_the_hook_s_timeout_proceeds_with_its_default_result(asg: Any) -> None:
    staying, leaving = group_of(asg, hook_timeout=1)
    asg.terminate_instance_in_auto_scaling_group(InstanceId=leaving, ShouldDecrementDesiredCapacity=True)
    assert states(asg)[leaving] == "Terminating:Wait"
    time.sleep(1.2)
    assert states(asg) == {staying: "InService"}, "the next look at the group sees the timeout's outcome"
    assert ec2_state(leaving) == "terminated"


def test_a_heartbeat_restarts_the_hook_s_timeout(asg: Any) -> None:
    _, leaving = group_of(asg, hook_timeout=2)
    asg.terminate_instance_in_auto_scaling_group(InstanceId=leaving, ShouldDecrementDesiredCapacity=True)
    time.sleep(1.5)
    asg.record_lifecycle_action_heartbeat(
        AutoScalingGroupName=GROUP, LifecycleHookName=HOOK, InstanceId=leaving
    )
    time.sleep(1.0)
    assert states(asg)[leaving] == "Terminating:Wait", "past the first deadline, within the heartbeat's"
    time.sleep(1.5)
    assert leaving not in states(asg)


def test_without_the_decrement_the_group_replaces_the_leaving_member(asg: Any) -> None:
    staying, leaving = group_of(asg)
    asg.terminate_instance_in_auto_scaling_group(InstanceId=leaving, ShouldDecrementDesiredCapacity=False)
    found = states(asg)
    assert found.pop(leaving) == "Terminating:Wait" and found.pop(staying) == "InService"
    assert list(found.values()) == ["InService"], "a replacement, as AWS launches one"


def test_deleting_the_group_takes_its_hook_and_lets_its_waiting_members_go(asg: Any) -> None:
    ids = group_of(asg)
    asg.terminate_instance_in_auto_scaling_group(InstanceId=ids[1], ShouldDecrementDesiredCapacity=True)
    asg.delete_auto_scaling_group(AutoScalingGroupName=GROUP, ForceDelete=True)
    assert asg.describe_lifecycle_hooks(AutoScalingGroupName=GROUP)["LifecycleHooks"] == []
    assert {ec2_state(i) for i in ids} == {"terminated"}


def worker_records(tmp_path: Path, ids: list[str]) -> list[dict[str, Any]]:
    """State records of local workers, as far as a scale-in reads them."""
    records = [{"instance_id": i, "home": str(tmp_path / i), "autoscaling_group": GROUP} for i in ids]
    for record in records:
        Path(record["home"]).mkdir()
        container.set_lifecycle_state(record, "InService")
    return records


def an_instance_that_leaves_when_told(asg: Any, record: dict[str, Any]) -> threading.Thread:
    """The worker's part (scripts/provisioning/running/leave.py): once its IMDS says
    Terminated, it completes its lifecycle action."""

    def watch() -> None:
        path = container.lifecycle_state_path(record)
        while path.read_text().strip() != "Terminated":
            time.sleep(0.02)
        complete(boto3.client("autoscaling", region_name=REGION), record["instance_id"])

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_a_scale_in_tells_the_worker_waits_for_it_and_hands_it_over_once_gone(
    asg: Any, tmp_path: Path
) -> None:
    staying, leaving = worker_records(tmp_path, group_of(asg))
    worker = an_instance_that_leaves_when_told(asg, leaving)
    gone: list[dict[str, Any]] = []
    out = io.StringIO()
    (departure,) = cloud.scale_in(asg, GROUP, [leaving], on_left=gone.append, out=out, poll=0.05)
    worker.join(5)
    assert (departure.instance_id, departure.outcome) == (leaving["instance_id"], "completed")
    assert gone == [leaving], "its container goes only once the group let it go"
    assert states(asg) == {staying["instance_id"]: "InService"}
    assert container.lifecycle_state_path(staying).read_text().strip() == "InService"
    assert f"{leaving['instance_id']} left after" in out.getvalue()
    assert "completed its lifecycle action" in out.getvalue()


def test_a_worker_that_never_completes_is_let_go_by_the_hook_s_timeout(asg: Any, tmp_path: Path) -> None:
    _, leaving = worker_records(tmp_path, group_of(asg, hook_timeout=1))
    out = io.StringIO()
    (departure,) = cloud.scale_in(asg, GROUP, [leaving], on_left=lambda record: None, out=out, poll=0.1)
    assert departure.outcome == "timed out" and departure.seconds >= 1
    assert "the hook let it go after its timeout" in out.getvalue()
