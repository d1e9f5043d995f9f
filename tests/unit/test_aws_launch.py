"""Launch, scale and teardown on EC2, against moto (never real AWS).

moto's Auto Scaling is the local cloud's (local/moto_lifecycle.py): with termination
lifecycle hooks as AWS has them, so a scale-in here waits for its workers as on AWS.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import stat
from pathlib import Path
from typing import Any

import boto3
import botocore.client
import botocore.exceptions
import invoke
import pytest

import airflow_ami.clouds.local.moto_lifecycle  # noqa: F401  (it patches moto as it loads)
from airflow_ami import cli, lifecycle
from airflow_ami.builddir import BuildDir
from airflow_ami.clouds import autoscaling, ec2
from airflow_ami.clouds import aws as aws_cloud
from airflow_ami.image import amis
from airflow_ami.image.record import Baked
from airflow_ami.seam import contract, layout
from airflow_ami.settings import RECORD, BakeSettings, LaunchSettings, load
from airflow_ami.settings.fields import SettingsError
from tests.unit.conftest import HOST_KEYS

# Moto plays EC2 and Auto Scaling for every test: out of the fast loop (-m "not slow").
pytestmark = pytest.mark.slow

REGION = "us-east-1"
Calls = list[tuple[str, str, dict[str, Any]]]  # the `aws` fixture (conftest.py)


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aws_cloud, "POLL", 0.0)


@pytest.fixture(autouse=True)
def instance_profile(aws: Calls) -> None:
    """The role a cluster's nodes launch with (EC2 refuses a profile that does not exist)."""
    iam = boto3.client("iam", region_name=REGION)
    for name in ("airflow-node", "airflow-worker"):
        iam.create_instance_profile(InstanceProfileName=name)


def ami(**bake: str) -> Baked:
    """An AMI tagged as a bake with these settings tags it (what it decided, read back by launch)."""
    client = boto3.client("ec2", region_name=REGION)
    source = client.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    instance = client.run_instances(ImageId=source, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    image = client.create_image(InstanceId=instance, Name="airflow-3.3.2-amazon-linux-2-x86_64-1")["ImageId"]
    client.terminate_instances(InstanceIds=[instance])
    baked = load(BakeSettings, cli={"cloud": "aws", "region": REGION, **bake})
    client.create_tags(Resources=[image], Tags=[{"Key": k, "Value": v} for k, v in baked.ami_tags().items()])
    target = settings()
    return Baked.of(target, image, lambda ami_id: ec2.image_tags(target, ami_id))


def settings(**cli: str) -> LaunchSettings:
    return load(LaunchSettings, cli={"cloud": "aws", "region": REGION, **cli})


def cluster(**cli: str) -> LaunchSettings:
    """Settings of a cluster launch (its DAG bundle and the nodes' instance profile)."""
    return settings(
        cluster="analytics",
        dags_s3_uri="s3://dags-bucket/dags",
        iam_instance_profile="airflow-node",
        worker_iam_instance_profile="airflow-worker",
        **cli,
    )


def ours(launch_id: str) -> dict[str, list[str]]:
    """What exists in the region with this launch's id (its tags)."""
    ec2 = boto3.client("ec2", region_name=REGION)
    tagged = [{"Name": f"tag:{aws_cloud.LAUNCH_ID_TAG}", "Values": [launch_id]}]
    running = [{"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}]
    name = f"airflow-ami-{launch_id}"
    groups = boto3.client("autoscaling", region_name=REGION).describe_auto_scaling_groups()[
        "AutoScalingGroups"
    ]
    return {
        "instances": [
            i["InstanceId"]
            for r in ec2.describe_instances(Filters=tagged + running)["Reservations"]
            for i in r["Instances"]
        ],
        "security_groups": [
            g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"] if g["GroupName"] == name
        ],
        "key_pairs": [k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"] if k["KeyName"] == name],
        "launch_templates": [
            t["LaunchTemplateId"]
            for t in ec2.describe_launch_templates()["LaunchTemplates"]
            if t["LaunchTemplateName"] == name
        ],
        "auto_scaling_groups": [
            g["AutoScalingGroupName"]
            for g in groups
            if {t["Key"]: t["Value"] for t in g["Tags"]}.get(aws_cloud.LAUNCH_ID_TAG) == launch_id
        ],
        "addresses": [a["AllocationId"] for a in ec2.describe_addresses(Filters=tagged)["Addresses"]],
    }


def nothing(launch_id: str) -> dict[str, list[str]]:
    return {kind: [] for kind in ours(launch_id)}


def launch_id(s: LaunchSettings) -> str:
    record = aws_cloud.LaunchRecord.load(s)
    assert record is not None
    return record.launch_id


def ingress(group_id: str) -> list[dict[str, Any]]:
    ec2 = boto3.client("ec2", region_name=REGION)
    return list(ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]["IpPermissions"])


def test_an_instance_is_imdsv2_only_encrypted_tagged_and_closed(aws: Calls, build_root: Path) -> None:
    s = settings(tags="Team=data")
    image = ami()
    (instance,) = aws_cloud.launch(s, image, io.StringIO())
    run = next(params for _, op, params in aws if op == "RunInstances" and params["ImageId"] == image.ami_id)
    assert run["MetadataOptions"] == {"HttpTokens": "required", "HttpEndpoint": "enabled"}
    assert run["BlockDeviceMappings"][0]["Ebs"]["Encrypted"] is True
    assert "UserData" not in run, "a standalone instance gets no user data"
    described = boto3.client("ec2", region_name=REGION).describe_instances(InstanceIds=[instance.instance_id])
    tags = {t["Key"]: t["Value"] for t in described["Reservations"][0]["Instances"][0]["Tags"]}
    assert tags["Team"] == "data" and tags[aws_cloud.LAUNCH_TAG] == image.ami_id
    assert tags[aws_cloud.LAUNCH_ID_TAG] == launch_id(s)
    found = ours(launch_id(s))
    assert [ingress(g) for g in found["security_groups"]] == [[]], "no --allow-cidr: no inbound rule"
    key_file = Path(instance.ssh_key_file)
    assert key_file.read_text().startswith("-----BEGIN") and stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert found["key_pairs"] and found["instances"] == [instance.instance_id]


def test_launch_records_the_host_keys_the_console_shows(aws: Calls, build_root: Path) -> None:
    (instance,) = aws_cloud.launch(settings(), ami(), io.StringIO())
    assert instance.host_keys == tuple(sorted(HOST_KEYS))


def test_allow_cidr_opens_ssh_and_the_api_to_that_cidr_only(aws: Calls, build_root: Path) -> None:
    s = settings(allow_cidr="203.0.113.7/32")
    aws_cloud.launch(s, ami(), io.StringIO())
    (group,) = ours(launch_id(s))["security_groups"]
    opened = sorted((p["FromPort"], [r["CidrIp"] for r in p["IpRanges"]]) for p in ingress(group))
    assert opened == [(22, ["203.0.113.7/32"]), (8080, ["203.0.113.7/32"])]


def test_a_cluster_is_a_controller_and_an_auto_scaling_group_of_workers(aws: Calls, build_root: Path) -> None:
    s = cluster(workers="2", worker_concurrency="4")
    image = ami()
    members = aws_cloud.launch(s, image, io.StringIO())
    assert [m.role for m in members] == ["controller", "worker", "worker"]
    assert {m.cluster for m in members} == {"analytics"}
    found = ours(launch_id(s))
    (group,) = found["security_groups"]
    between = sorted(p["FromPort"] for p in ingress(group) if p["UserIdGroupPairs"])
    assert between == sorted([layout.REDIS_PORT, image.api_port, layout.WORKER_LOG_PORT])
    assert all(pair["GroupId"] == group for p in ingress(group) for pair in p["UserIdGroupPairs"])
    (template,) = found["launch_templates"]
    data = boto3.client("ec2", region_name=REGION).describe_launch_template_versions(
        LaunchTemplateId=template
    )["LaunchTemplateVersions"][0]["LaunchTemplateData"]
    doc = json.loads(base64.b64decode(data["UserData"]))
    described = boto3.client("ec2", region_name=REGION).describe_instances(
        InstanceIds=[members[0].instance_id]
    )
    assert doc == {
        "role": "worker",
        "cluster": "analytics",
        "controller": described["Reservations"][0]["Instances"][0]["PrivateIpAddress"],
        "dags_s3_uri": "s3://dags-bucket/dags",
        "worker_concurrency": 4,
        "task_logs_s3_uri": "s3://dags-bucket/task-logs/analytics",
        "autoscaling_group": "airflow-ami-analytics-workers",
        "lifecycle_hook": contract.LIFECYCLE_HOOK,
    }
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    # Each role its own profile: the workers' writes neither the store nor the DAG bucket.
    assert data["IamInstanceProfile"] == {"Name": "airflow-worker"}
    assert described["Reservations"][0]["Instances"][0]["IamInstanceProfile"]["Arn"].endswith("/airflow-node")
    controller = next(
        params for _, op, params in aws if op == "RunInstances" and params["ImageId"] == image.ami_id
    )
    assert json.loads(base64.b64decode(controller["UserData"]))["role"] == "controller"
    assert found["auto_scaling_groups"] == ["airflow-ami-analytics-workers"]


def test_the_worker_group_is_made_with_its_hook_and_its_queue_depth_policy(
    aws: Calls, build_root: Path
) -> None:
    s = cluster(workers="2", min_workers="1", max_workers="5", worker_concurrency="4")
    aws_cloud.launch(s, ami(), io.StringIO())
    name = "airflow-ami-analytics-workers"
    (create,) = [p for _, op, p in aws if op == "CreateAutoScalingGroup"]
    assert (create["MinSize"], create["DesiredCapacity"], create["MaxSize"]) == (1, 2, 5)
    assert create["LifecycleHookSpecificationList"] == [
        {
            "LifecycleHookName": contract.LIFECYCLE_HOOK,
            "LifecycleTransition": "autoscaling:EC2_INSTANCE_TERMINATING",
            "HeartbeatTimeout": layout.WORKER_SERVICE["stop_timeout"] + contract.LEAVE_MARGIN_SECONDS,
            "DefaultResult": "CONTINUE",
        }
    ], "the hook comes with the group: no worker exists without it"
    asg = boto3.client("autoscaling", region_name=REGION)
    (hook,) = asg.describe_lifecycle_hooks(AutoScalingGroupName=name)["LifecycleHooks"]
    assert (hook["LifecycleHookName"], hook["DefaultResult"]) == (contract.LIFECYCLE_HOOK, "CONTINUE")
    (policy,) = asg.describe_policies(AutoScalingGroupName=name)["ScalingPolicies"]
    tracking = policy["TargetTrackingConfiguration"]
    assert (policy["PolicyType"], tracking["TargetValue"]) == ("TargetTrackingScaling", 4.0)
    m1, m2, e1 = tracking["CustomizedMetricSpecification"]["Metrics"]
    assert m1["MetricStat"]["Metric"] == {
        "Namespace": contract.METRICS_NAMESPACE,
        "MetricName": contract.QUEUE_DEPTH_METRIC,
        "Dimensions": [{"Name": contract.CLUSTER_DIMENSION, "Value": "analytics"}],
    }
    assert m2["MetricStat"]["Metric"]["MetricName"] == "GroupInServiceInstances"
    assert m2["MetricStat"]["Metric"]["Dimensions"] == [{"Name": "AutoScalingGroupName", "Value": name}]
    assert (e1["Expression"], e1["ReturnData"], m1["ReturnData"]) == ("m1 / m2", True, False)
    (group,) = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"]
    assert {m["Metric"] for m in group["EnabledMetrics"]} == {"GroupInServiceInstances"}
    record = aws_cloud.LaunchRecord.load(s)
    assert record is not None
    assert [r["id"] for r in record.of("lifecycle_hook")] == [contract.LIFECYCLE_HOOK]
    assert [r["id"] for r in record.of("scaling_policy")] == [policy["PolicyName"]]


def test_without_a_concurrency_the_policy_targets_airflow_s_default(aws: Calls, build_root: Path) -> None:
    aws_cloud.launch(cluster(workers="1"), ami(), io.StringIO())
    (policy,) = boto3.client("autoscaling", region_name=REGION).describe_policies()["ScalingPolicies"]
    assert policy["TargetTrackingConfiguration"]["TargetValue"] == 16.0


def complete_the_leaving_workers_actions(seconds: float) -> None:
    """What each leaving worker does (scripts/provisioning/running/leave.py), as `sleep`."""
    asg = boto3.client("autoscaling", region_name=REGION)
    for instance in asg.describe_auto_scaling_instances()["AutoScalingInstances"]:
        if instance["LifecycleState"] == "Terminating:Wait":
            asg.complete_lifecycle_action(
                AutoScalingGroupName=instance["AutoScalingGroupName"],
                LifecycleHookName=contract.LIFECYCLE_HOOK,
                InstanceId=instance["InstanceId"],
                LifecycleActionResult="CONTINUE",
            )


def test_scale_out_then_in_waits_for_each_leaving_worker_to_complete_its_action(
    aws: Calls, build_root: Path
) -> None:
    s = cluster(workers="1")
    aws_cloud.launch(s, ami(), io.StringIO())
    asg = boto3.client("autoscaling", region_name=REGION)
    aws_cloud.scale(s, 3, io.StringIO())
    (group,) = asg.describe_auto_scaling_groups()["AutoScalingGroups"]
    assert (group["MinSize"], group["DesiredCapacity"], group["MaxSize"]) == (1, 3, 8), "Min/Max kept"
    assert len(group["Instances"]) == 3
    out = io.StringIO()
    aws_cloud.scale(s, 1, out, sleep=complete_the_leaving_workers_actions)
    (group,) = asg.describe_auto_scaling_groups()["AutoScalingGroups"]
    assert [i["LifecycleState"] for i in group["Instances"]] == ["InService"]
    left = [line for line in out.getvalue().splitlines() if " left after " in line]
    assert len(left) == 2 and all("completed its lifecycle action" in line for line in left), out.getvalue()
    assert "Terminating:Wait" in out.getvalue(), "the wait was reported while the workers drained"
    gone = [line.split()[1] for line in left]
    states = boto3.client("ec2", region_name=REGION).describe_instances(InstanceIds=gone)["Reservations"]
    assert {i["State"]["Name"] for r in states for i in r["Instances"]} == {"terminated"}


def test_scale_of_another_cluster_than_the_launch_s_is_refused(aws: Calls, build_root: Path) -> None:
    s = cluster(workers="1")
    aws_cloud.launch(s, ami(), io.StringIO())
    with pytest.raises(aws_cloud.LaunchError, match="records cluster analytics, not sales: scale it with"):
        aws_cloud.scale(dataclasses.replace(s, cluster="sales"), 3, io.StringIO())
    asg = boto3.client("autoscaling", region_name=REGION)
    assert [g["DesiredCapacity"] for g in asg.describe_auto_scaling_groups()["AutoScalingGroups"]] == [1]


def test_scale_widens_min_or_max_only_when_the_count_lies_outside(aws: Calls, build_root: Path) -> None:
    s = cluster(workers="2", min_workers="2", max_workers="2")
    aws_cloud.launch(s, ami(), io.StringIO())
    asg = boto3.client("autoscaling", region_name=REGION)
    aws_cloud.scale(s, 3, io.StringIO())
    (group,) = asg.describe_auto_scaling_groups()["AutoScalingGroups"]
    assert (group["MinSize"], group["DesiredCapacity"], group["MaxSize"]) == (2, 3, 3)
    aws_cloud.scale(s, 0, io.StringIO(), sleep=complete_the_leaving_workers_actions)
    (group,) = asg.describe_auto_scaling_groups()["AutoScalingGroups"]
    assert (group["MinSize"], group["DesiredCapacity"], group["MaxSize"]) == (0, 0, 3)
    assert group["Instances"] == []


def test_a_scale_in_whose_worker_never_leaves_fails_after_the_hook_and_a_margin(
    aws: Calls, build_root: Path
) -> None:
    aws_cloud.launch(cluster(workers="2"), ami(), io.StringIO())
    asg = boto3.client("autoscaling", region_name=REGION)
    name = "airflow-ami-analytics-workers"
    (group,) = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"]
    asg.set_desired_capacity(AutoScalingGroupName=name, DesiredCapacity=1)
    now = [0.0]

    def an_hour_passes(seconds: float) -> None:
        now[0] += 3600

    with pytest.raises(autoscaling.ScalingError, match=r"Terminating:Wait") as err:
        autoscaling.wait_until_scaled(
            asg,
            name,
            1,
            [i["InstanceId"] for i in group["Instances"]],
            out=io.StringIO(),
            poll=0,
            sleep=an_hour_passes,
            clock=lambda: now[0],
        )
    assert "describe-scaling-activities" in str(err.value) and layout.LEAVE_UNIT in str(err.value)


def test_scale_without_a_cluster_says_to_launch_one(aws: Calls, build_root: Path) -> None:
    with pytest.raises(aws_cloud.LaunchError, match="launch a cluster first"):
        aws_cloud.scale(settings(), 2)


def test_teardown_removes_this_launch_only_and_is_idempotent(aws: Calls, build_root: Path) -> None:
    image = ami()
    mine = cluster(workers="2")
    theirs = settings(build_name="someone-else")
    aws_cloud.launch(mine, image, io.StringIO())
    aws_cloud.launch(theirs, image, io.StringIO())
    mine_id, their_id = launch_id(mine), launch_id(theirs)
    before = ours(their_id)
    removed = aws_cloud.teardown(mine, io.StringIO())
    assert ours(mine_id) == nothing(mine_id)
    # key pair, instance, the cluster's address, launch template, security group, Auto Scaling
    # group, its lifecycle hook and its scaling policy
    assert len(removed) == 8 and not aws_cloud.launch_record_path(mine).exists()
    assert {contract.LIFECYCLE_HOOK, "airflow-ami-analytics-workers-queue-depth"} <= set(removed)
    operations = [op for _, op, _ in aws]
    deleted = [
        operations.index(op) for op in ("DeletePolicy", "DeleteLifecycleHook", "DeleteAutoScalingGroup")
    ]
    assert deleted == sorted(deleted), "the policy and the hook go explicitly, before their group"
    assert ours(their_id) == before, "another launch in the region was touched"
    assert aws_cloud.teardown(mine, io.StringIO()) == []


def test_a_second_launch_into_a_recorded_one_is_refused(aws: Calls, build_root: Path) -> None:
    s = settings()
    image = ami()
    aws_cloud.launch(s, image, io.StringIO())
    with pytest.raises(aws_cloud.LaunchError, match="teardown"):
        aws_cloud.launch(s, image, io.StringIO())


FAILING_STEPS = (
    "CreateKeyPair",
    "DescribeSubnets",
    "CreateSecurityGroup",
    "AuthorizeSecurityGroupIngress",
    "RunInstances",
    "AllocateAddress",
    "AssociateAddress",
    "CreateLaunchTemplate",
    "CreateAutoScalingGroup",
    "EnableMetricsCollection",
    "PutScalingPolicy",
    "DescribeInstanceStatus",
)


def launch_broken_at(monkeypatch: pytest.MonkeyPatch, step: str, *, answered: bool) -> str:
    """A cluster launch that AWS refuses at `step` (or, `answered`, that is interrupted right
    after AWS answered it), then a teardown; the launch's id."""
    s = cluster(workers="2", allow_cidr="10.0.0.0/8")
    image = ami()
    spied = botocore.client.BaseClient._make_api_call

    def broken(self: Any, operation: str, params: dict[str, Any]) -> Any:
        if operation == step and not answered:
            raise botocore.exceptions.ClientError(
                {"Error": {"Code": "Throttling", "Message": step}}, operation
            )
        answer = spied(self, operation, params)
        if operation == step:
            raise KeyboardInterrupt
        return answer

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", broken)
    with pytest.raises(KeyboardInterrupt if answered else botocore.exceptions.ClientError):
        aws_cloud.launch(s, image, io.StringIO())
    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", spied)
    made = launch_id(s)
    aws_cloud.teardown(s, io.StringIO())
    assert not aws_cloud.launch_record_path(s).exists()
    assert aws_cloud.teardown(s, io.StringIO()) == []
    return made


@pytest.mark.parametrize("step", FAILING_STEPS)
def test_teardown_after_a_launch_failed_at_each_step_leaves_nothing(
    aws: Calls, build_root: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    made = launch_broken_at(monkeypatch, step, answered=False)
    assert ours(made) == nothing(made)


CREATE_CALLS = (
    "CreateKeyPair",
    "CreateSecurityGroup",
    "RunInstances",
    "AllocateAddress",
    "CreateLaunchTemplate",
    "CreateAutoScalingGroup",
    "PutScalingPolicy",
)


@pytest.mark.parametrize("step", CREATE_CALLS)
def test_a_launch_interrupted_right_after_a_create_call_returns_leaves_nothing_after_teardown(
    aws: Calls, build_root: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    """Ctrl-C between AWS answering and the record hearing of it: teardown finds the resource."""
    made = launch_broken_at(monkeypatch, step, answered=True)
    assert ours(made) == nothing(made)
    assert boto3.client("autoscaling", region_name=REGION).describe_policies()["ScalingPolicies"] == []


def test_ctrl_c_during_a_launch_says_what_is_left_and_what_removes_it(
    build_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*_: Any, **__: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(lifecycle, "launch", interrupted)
    with pytest.raises(invoke.Exit) as err:
        cli.launch(settings(), "")
    assert err.value.code == cli.EXIT_INTERRUPTED
    assert "`./bake teardown` removes it" in str(err.value.message)
    assert "was stopped and removed" not in str(err.value.message)


def test_an_ipv6_allow_cidr_is_an_ipv6_range(aws: Calls, build_root: Path) -> None:
    s = settings(allow_cidr="2001:db8::/64,10.0.0.0/8")
    (instance,) = aws_cloud.launch(s, ami(), io.StringIO())
    group = boto3.client("ec2", region_name=REGION).describe_instances(InstanceIds=[instance.instance_id])[
        "Reservations"
    ][0]["Instances"][0]["SecurityGroups"][0]["GroupId"]
    sources = {
        (rule["FromPort"], r.get("CidrIp") or r.get("CidrIpv6"), "Ipv6" if "CidrIpv6" in r else "Ipv4")
        for rule in ingress(group)
        for r in rule.get("IpRanges", []) + rule.get("Ipv6Ranges", [])
    }
    assert sources == {
        (22, "2001:db8::/64", "Ipv6"),
        (8080, "2001:db8::/64", "Ipv6"),
        (22, "10.0.0.0/8", "Ipv4"),
        (8080, "10.0.0.0/8", "Ipv4"),
    }


def test_lifecycle_records_the_cluster_and_says_how_to_reach_it(aws: Calls, build_root: Path) -> None:
    s = cluster(workers="2")
    out = io.StringIO()
    members = lifecycle.launch(s, ami().ami_id, out)
    assert "AWS-StartPortForwardingSession" in out.getvalue(), "no --allow-cidr: the SSM way in is printed"
    bdir = lifecycle.BuildDir.of(s)
    assert json.loads(bdir.instance_record.read_text())["instance_id"] == members[0].instance_id
    assert len(json.loads(bdir.cluster_record.read_text())["members"]) == 3
    report = lifecycle.status(s)
    assert report["ok"] and report["healthy"] is None and len(report["instances"]) == 3
    lines = lifecycle.ready(s, members[0])
    assert lines[1] == "admin user: admin" and "./bake ssh -- sudo cat" in lines[2]
    lifecycle.teardown(s)
    with pytest.raises(lifecycle.MissingRecord, match="nothing launched"):
        lifecycle.status(s)


VERIFY_OUTCOMES = {
    "passed": (0, [], True),
    "failed": (1, [], False),
    "a part passed": (0, ["-k", "ports"], False),
}


@pytest.mark.parametrize("outcome", VERIFY_OUTCOMES)
def test_only_a_whole_verify_that_passed_tags_the_ami_verified(
    aws: Calls, build_root: Path, monkeypatch: pytest.MonkeyPatch, outcome: str
) -> None:
    code, pytest_args, tagged = VERIFY_OUTCOMES[outcome]
    s = settings()
    image = ami()
    lifecycle.launch(s, image.ami_id, io.StringIO(), wait=False)
    monkeypatch.setattr(lifecycle.verify, "run_suite", lambda *_, **__: code)
    assert lifecycle.verify_instance(s, pytest_args=pytest_args) == code
    assert (amis.VERIFIED_TAG in ec2.image_tags(s, image.ami_id)) is tagged


def test_an_ami_of_another_arch_than_the_launch_s_is_refused_before_anything_is_made(
    aws: Calls, build_root: Path
) -> None:
    """The launch's instance type follows its --arch (t3.large on x86_64): an arm64 AMI
    launched without --arch arm64 is one line naming the flag, not an instance AWS refuses."""
    image = ami(arch="arm64")
    s = settings(allow_cidr="203.0.113.7/32")
    before = len(aws)
    with pytest.raises(SettingsError, match=rf"setting arch: must be arm64, what {image.ami_id} was baked"):
        lifecycle.launch(s, image.ami_id, io.StringIO(), wait=False)
    assert not [op for _, op, _ in aws[before:] if op.startswith(("Run", "Create"))]


@pytest.mark.parametrize("known_by", ["the build's ami.json", "the AMI's tags"])
def test_launch_opens_the_api_port_the_image_was_baked_with_not_a_flag_s(
    aws: Calls, build_root: Path, monkeypatch: pytest.MonkeyPatch, known_by: str
) -> None:
    """Baked with --api-port 9090, launched without the flag: the group opens 9090, the
    port health is waited on, whether the AMI is the last build's or named with --ami."""
    image = ami(api_port="9090")
    if known_by == "the build's ami.json":
        bdir = BuildDir.of(settings())
        baked = load(BakeSettings, cli={"cloud": "aws", "region": REGION, "api_port": "9090"})
        bdir.write(bdir.ami_record, {**baked.reaching(RECORD), "ami_id": image.ami_id})
        boto3.client("ec2", region_name=REGION).delete_tags(Resources=[image.ami_id])
    waited: list[str] = []
    monkeypatch.setattr(lifecycle.health, "wait_healthy", lambda base, out: waited.append(base))
    s = cluster(workers="1", allow_cidr="203.0.113.7/32")
    members = lifecycle.launch(s, image.ami_id, io.StringIO())
    (group,) = ours(launch_id(s))["security_groups"]
    opened = {p["FromPort"] for p in ingress(group)}
    assert 9090 in opened and 8080 not in opened
    assert waited == [f"http://{members[0].address}:9090"], "health was not waited for on the baked port"


def test_an_upgrade_s_new_controller_is_a_controller_of_the_cluster_s_dag_bundle(
    aws: Calls, build_root: Path
) -> None:
    """Upgrading a cluster's controller (upgrade.py sets the old instance's role and cluster,
    no workers, no --dags-s3-uri): the new instance is told it is that cluster's controller
    and reads the bundle its launch recorded, not a standalone instance's user data."""
    launched = cluster(workers="1", allow_cidr="203.0.113.7/32")
    image = ami()
    aws_cloud.launch(launched, image, io.StringIO())
    upgrading = dataclasses.replace(
        cluster(allow_cidr="203.0.113.7/32"),
        role="controller",
        dags_s3_uri="",
        restore="s3://dumps/analytics/1.sql.gz",
    )
    new = aws_cloud.AwsCloud().launch_replacement(upgrading, image)
    run = [p for _, op, p in aws if op == "RunInstances"][-1]
    doc = json.loads(base64.b64decode(run["UserData"]))
    assert (doc["role"], doc["cluster"], doc["dags_s3_uri"]) == (
        "controller",
        "analytics",
        "s3://dags-bucket/dags",
    )
    assert doc["restore"] == "s3://dumps/analytics/1.sql.gz"
    assert new.role == "controller"
    aws_cloud.teardown(launched, io.StringIO())


def test_an_upgrade_s_new_instance_joins_the_launch_and_takes_the_deployment_s_address(
    aws: Calls, build_root: Path
) -> None:
    s = settings(deployment="prod", allow_cidr="203.0.113.7/32")
    image = ami()
    (old,) = aws_cloud.launch(s, image, io.StringIO())
    (address,) = ours(launch_id(s))["addresses"]
    eip = boto3.client("ec2", region_name=REGION).describe_addresses(AllocationIds=[address])["Addresses"][0]
    assert eip["InstanceId"] == old.instance_id and old.deployment_address == eip["PublicIp"]
    cloud = aws_cloud.AwsCloud()
    new = cloud.launch_replacement(dataclasses.replace(s, restore="s3://dumps/prod/airflow-1.sql.gz"), image)
    run = [p for _, op, p in aws if op == "RunInstances"][-1]
    assert json.loads(base64.b64decode(run["UserData"]))["restore"] == "s3://dumps/prod/airflow-1.sql.gz"
    assert run["SecurityGroupIds"] == [ours(launch_id(s))["security_groups"][0]], "the launch's own group"
    moved = cloud.move_address(s, new)
    eip = boto3.client("ec2", region_name=REGION).describe_addresses(AllocationIds=[address])["Addresses"][0]
    assert eip["InstanceId"] == new.instance_id and moved.deployment_address == eip["PublicIp"]
    cloud.remove_instance(s, old)
    assert [i.instance_id for i in aws_cloud.instances(s)] == [new.instance_id]
    made = launch_id(s)
    aws_cloud.teardown(s, io.StringIO())
    assert ours(made) == nothing(made), "the address is released with the launch"
