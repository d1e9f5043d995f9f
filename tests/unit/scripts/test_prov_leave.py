"""A worker of an Auto Scaling group leaving it (running/leave.py, `provision.py
leave-when-told`): against the local cloud's IMDS (its target lifecycle state from the
file the host writes) and moto's server with lifecycle hooks as AWS has them."""

import contextlib
import json
import threading
import types
from http.server import ThreadingHTTPServer

import pytest
from provfakes import RecordingContext, aws_client, free_port
from provisioning.running import leave
from provisioning.shared import contract, layout
from provisioning.shared.awsapi import Imds

import airflow_ami.clouds.local.moto_lifecycle  # noqa: F401  (it patches moto as it loads)
from airflow_ami.clouds import autoscaling
from airflow_ami.clouds.local import cloud, imds

# moto's server plays Auto Scaling, EC2 and S3.
pytestmark = pytest.mark.slow

REGION = "eu-west-1"
GROUP = autoscaling.worker_group_name("analytics")
KEYS = {"AccessKeyId": "AKIDLEAVING", "SecretAccessKey": "RoleS3cretKey1234", "Token": "RoleSessionToken1234"}
LOGS_URI = "s3://task-logs/analytics"
TASK_LOG = "dag_id=fanout/run_id=manual__1/task_id=sleep/attempt=1.log"
CUT_SHORT = "dag_id=fanout/run_id=manual__1/task_id=sleep/attempt=2.log"
WORKER_UNIT = layout.WORKER_SERVICE["unit"]


@pytest.fixture
def member(endpoint):
    """A worker the group is terminating (Terminating:Wait on its hook): its instance id."""
    asg, ec2 = aws_client("autoscaling", endpoint), aws_client("ec2", endpoint)
    for group in asg.describe_auto_scaling_groups()["AutoScalingGroups"]:
        asg.delete_auto_scaling_group(AutoScalingGroupName=group["AutoScalingGroupName"], ForceDelete=True)
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    template = ec2.create_launch_template(
        LaunchTemplateName=f"lt-{free_port()}", LaunchTemplateData={"ImageId": image}
    )["LaunchTemplate"]["LaunchTemplateId"]
    autoscaling.create_worker_group(
        asg,
        GROUP,
        launch_template=template,
        sizes=(0, 0, 8),
        placement={"AvailabilityZones": [f"{REGION}a"]},
        tags=[],
    )
    (instance,) = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)["Instances"]
    cloud.join_group(asg, GROUP, instance["InstanceId"])
    asg.terminate_instance_in_auto_scaling_group(
        InstanceId=instance["InstanceId"], ShouldDecrementDesiredCapacity=True
    )
    return instance["InstanceId"]


def user_data(**over):
    doc = {
        "role": "worker",
        "cluster": "analytics",
        "controller": "10.0.1.5",
        "dags_s3_uri": "s3://dags/analytics",
        "task_logs_s3_uri": LOGS_URI,
        "autoscaling_group": GROUP,
        "lifecycle_hook": contract.LIFECYCLE_HOOK,
    }
    return json.dumps({k: v for k, v in {**doc, **over}.items() if v is not None})


@pytest.fixture
def metadata(tmp_path, member):
    """The local cloud's IMDS of the member: InService until the test says otherwise."""
    state = tmp_path / imds.LIFECYCLE_STATE_FILE
    imds.write_lifecycle_state(state, "InService")
    doc = {
        "instance_id": member,
        "ami_id": "ami-0123456789abcdef0",
        "instance_type": "t3.large",
        "private_ip": "10.213.0.6",
        "hostname": "ip-10-213-0-6",
        "region": REGION,
        "availability_zone": f"{REGION}a",
        "account_id": "123456789012",
        "user_data": user_data(),
        "role": {
            "name": "node",
            "profile_arn": "arn:aws:iam::123456789012:instance-profile/node",
            "credentials": KEYS,
        },
        "lifecycle_state_file": str(state),
    }
    server = ThreadingHTTPServer(("127.0.0.1", 0), imds.make_handler(imds.metadata_tree(doc), imds.Tokens()))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield {"doc": doc, "state": state, "base": f"http://127.0.0.1:{server.server_address[1]}"}
    server.shutdown()
    server.server_close()


@pytest.fixture
def worker(tmp_path, monkeypatch):
    """This instance as first boot left a worker: its role recorded, task logs on disk."""
    monkeypatch.setattr(layout, "ROLE_DIR", str(tmp_path / "role"))
    monkeypatch.setattr(layout, "AIRFLOW_LOGS", str(tmp_path / "logs"))
    (tmp_path / "role").mkdir()
    (tmp_path / "role" / "worker").write_text("worker\n")
    for path in (TASK_LOG, CUT_SHORT, "dag_processor/2026-12-02/fanout.py.log"):
        (tmp_path / "logs" / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "logs" / path).write_text(f"the log {path} on the instance\n")
    return tmp_path


@pytest.fixture
def bucket(endpoint):
    s3 = aws_client("s3", endpoint)
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):  # the module's server keeps it
        s3.create_bucket(Bucket="task-logs", CreateBucketConfiguration={"LocationConstraint": REGION})
    for key in [o["Key"] for o in s3.list_objects_v2(Bucket="task-logs").get("Contents", [])]:
        s3.delete_object(Bucket="task-logs", Key=key)
    # Airflow put the log of the task that ended.
    s3.put_object(Bucket="task-logs", Key=f"analytics/{TASK_LOG}", Body=b"uploaded by Airflow at task end\n")
    return s3


@pytest.fixture
def leaving(endpoint, member, metadata, worker, bucket):
    """All of it: the server, the member the group is terminating, its IMDS, the instance, S3."""
    return types.SimpleNamespace(endpoint=endpoint, member=member, metadata=metadata, s3=bucket)


def context(endpoint):
    return RecordingContext({"aws_endpoint_url": endpoint, "task_logs_s3_uri": ""})


def group_members(endpoint):
    (group,) = aws_client("autoscaling", endpoint).describe_auto_scaling_groups(
        AutoScalingGroupNames=[GROUP]
    )["AutoScalingGroups"]
    return {i["InstanceId"]: i["LifecycleState"] for i in group["Instances"]}


def told_after_the_first_look(metadata):
    """`sleep` of the watch: the host tells the instance it is leaving after one look."""
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        imds.write_lifecycle_state(metadata["state"], "Terminated")

    return sleep, slept


def test_a_worker_told_it_is_leaving_drains_puts_the_missing_logs_and_completes(leaving, capsys):
    endpoint, member, bucket = leaving.endpoint, leaving.member, leaving.s3
    ctx = context(endpoint)
    sleep, slept = told_after_the_first_look(leaving.metadata)
    status = leave.main(ctx, imds=lambda: Imds(base=leaving.metadata["base"]), sleep=sleep, poll=5)
    out = capsys.readouterr().out
    assert status == 0, out
    assert slept == [5], "it watched until told, then left"
    assert ctx.commands == [["systemctl", "stop", WORKER_UNIT]], "the warm shutdown: running tasks finish"
    keys = sorted(o["Key"] for o in bucket.list_objects_v2(Bucket="task-logs")["Contents"])
    assert keys == [f"analytics/{TASK_LOG}", f"analytics/{CUT_SHORT}"], (
        "task logs only, where Airflow puts them"
    )
    kept = bucket.get_object(Bucket="task-logs", Key=f"analytics/{TASK_LOG}")["Body"].read()
    assert kept == b"uploaded by Airflow at task end\n", "what Airflow put is not overwritten"
    put = bucket.get_object(Bucket="task-logs", Key=f"analytics/{CUT_SHORT}")
    assert put["Body"].read() == f"the log {CUT_SHORT} on the instance\n".encode()
    assert put["ServerSideEncryption"] == "AES256", "as Airflow's encrypt_s3_logs puts them"
    assert member not in group_members(endpoint), "the group let it go"
    (reservation,) = aws_client("ec2", endpoint).describe_instances(InstanceIds=[member])["Reservations"]
    assert reservation["Instances"][0]["State"]["Name"] == "terminated"
    lines = [line for line in out.splitlines() if "leave:" in line]
    for said in (
        f"Auto Scaling group {GROUP} (hook {contract.LIFECYCLE_HOOK})",
        "target lifecycle state InService",
        "target lifecycle state Terminated",
        f"stopping {WORKER_UNIT}",
        f"{WORKER_UNIT} stopped after",
        f"1 of 2 task log(s) were not in {LOGS_URI} yet",
        f"completed lifecycle action {contract.LIFECYCLE_HOOK} of {GROUP} for {member}",
    ):
        assert sum(said in line for line in lines) == 1, (said, out)
    assert not any(secret in out for secret in KEYS.values()), "no credential in the log"


def test_a_worker_whose_stop_fails_does_not_complete_and_is_started_again(leaving, capsys):
    ctx = context(leaving.endpoint)
    ctx.run_output = lambda argv: (1, "Job for airflow-celery-worker.service canceled.")
    imds.write_lifecycle_state(leaving.metadata["state"], "Terminated")
    assert leave.main(ctx, imds=lambda: Imds(base=leaving.metadata["base"]), sleep=lambda s: None) == 1
    assert "!!! leave: systemctl stop" in capsys.readouterr().out
    members = group_members(leaving.endpoint)
    assert members[leaving.member] == "Terminating:Wait", "a worker still running tasks stays"


def test_an_action_that_is_over_already_is_not_an_error(leaving, capsys):
    aws_client("autoscaling", leaving.endpoint).complete_lifecycle_action(
        AutoScalingGroupName=GROUP,
        LifecycleHookName=contract.LIFECYCLE_HOOK,
        InstanceId=leaving.member,
        LifecycleActionResult="CONTINUE",
    )
    imds.write_lifecycle_state(leaving.metadata["state"], "Terminated")
    metadata = leaving.metadata
    assert (
        leave.main(context(leaving.endpoint), imds=lambda: Imds(base=metadata["base"]), sleep=lambda s: None)
        == 0
    )
    assert f"the lifecycle action of {leaving.member} is over already" in capsys.readouterr().out


def test_without_remote_task_logs_it_drains_and_completes(endpoint, member, metadata, worker, capsys):
    role = contract.parse_user_data(user_data(task_logs_s3_uri=None))
    imds.write_lifecycle_state(metadata["state"], "Terminated")
    leave.leave(context(endpoint), role, Imds(base=metadata["base"]))
    assert "remote task logs are off" in capsys.readouterr().out
    assert member not in group_members(endpoint)


def no_imds():
    raise AssertionError("IMDS asked")


def test_another_role_has_nothing_to_watch(worker, capsys):
    (worker / "role" / "worker").rename(worker / "role" / "controller")
    assert leave.main(RecordingContext(), imds=no_imds) == 0
    assert "not a worker" in capsys.readouterr().out


def test_a_worker_outside_a_group_has_nothing_to_watch(worker, metadata, capsys):
    metadata["doc"]["user_data"] = user_data(autoscaling_group=None, lifecycle_hook=None)
    doc = {**metadata["doc"], "lifecycle_state_file": ""}
    server = ThreadingHTTPServer(("127.0.0.1", 0), imds.make_handler(imds.metadata_tree(doc), imds.Tokens()))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        assert leave.main(RecordingContext(), imds=lambda: Imds(base=base)) == 0
    finally:
        server.shutdown()
        server.server_close()
    assert "names no Auto Scaling group: nothing to watch" in capsys.readouterr().out


def test_a_failing_call_is_tried_again_but_an_invalid_one_is_not(capsys):
    calls, slept = [], []

    def flaky(fail_with):
        def call():
            calls.append(1)
            if len(calls) <= len(fail_with):
                raise OSError(fail_with[len(calls) - 1])
            return "done"

        return call

    assert leave.retried("a call", flaky(["HTTP 503", "timed out"]), sleep=slept.append) == "done"
    assert (len(calls), slept) == (3, [1, 2])
    calls.clear()
    with pytest.raises(OSError, match="ValidationError"):
        leave.retried("a call", flaky(["HTTP 400 ValidationError"]), sleep=slept.append)
    assert len(calls) == 1
    calls.clear()
    with pytest.raises(OSError, match="HTTP 500"):
        leave.retried("a call", flaky(["HTTP 500"] * 9), sleep=lambda s: None)
    assert len(calls) == leave.ATTEMPTS
    assert "try 1 of 4" in capsys.readouterr().out


def test_task_logs_are_the_dag_id_trees_only(worker):
    assert leave.task_logs(layout.AIRFLOW_LOGS) == [TASK_LOG, CUT_SHORT]
    assert leave.task_logs(str(worker / "nowhere")) == []
