"""boto3 steps after the build, against moto (never real AWS)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import botocore.client
import pytest
from moto import mock_aws

from airflow_ami import ec2
from airflow_ami.settings import load_settings


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, str, dict[str, Any]]]]:
    """moto in-process, plus a record of every EC2 call (region, operation, params)."""
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    calls: list[tuple[str, str, dict[str, Any]]] = []
    real = botocore.client.BaseClient._make_api_call

    def spy(self: Any, operation: str, params: dict[str, Any]) -> Any:
        calls.append((self.meta.region_name, operation, params))
        return real(self, operation, params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", spy)
    with mock_aws():
        yield calls


def register(region: str, name: str) -> str:
    client = boto3.client("ec2", region_name=region)
    return str(client.register_image(Name=name, RootDeviceName="/dev/xvda")["ImageId"])


def test_every_copy_of_the_ami_is_made_imdsv2_only(aws: list[tuple[str, str, dict[str, Any]]]) -> None:
    amis = {"us-east-1": register("us-east-1", "airflow-a"), "eu-west-1": register("eu-west-1", "airflow-b")}
    ec2.require_imdsv2(load_settings(), amis)
    modified = [(region, params) for region, op, params in aws if op == "ModifyImageAttribute"]
    assert modified == [
        ("eu-west-1", {"ImageId": amis["eu-west-1"], "ImdsSupport": {"Value": "v2.0"}}),
        ("us-east-1", {"ImageId": amis["us-east-1"], "ImdsSupport": {"Value": "v2.0"}}),
    ]


def test_a_missing_ami_is_an_error(aws: list[tuple[str, str, dict[str, Any]]]) -> None:
    with pytest.raises(botocore.exceptions.ClientError):
        ec2.require_imdsv2(load_settings(), {"us-east-1": "ami-12345678"})


def test_image_name_reads_the_registered_name(aws: list[tuple[str, str, dict[str, Any]]]) -> None:
    ami = register("us-east-1", "airflow-3.3.2-x")
    assert ec2.image_name(load_settings(), "us-east-1", ami) == "airflow-3.3.2-x"


def bake_image(region: str, name: str, os_name: str = "amazon-linux-2") -> str:
    """An AMI shaped like build-ami's: made from an instance, tagged with the OS."""
    client = boto3.client("ec2", region_name=region)
    source = client.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    instance = client.run_instances(ImageId=source, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    ami = client.create_image(InstanceId=instance, Name=name)["ImageId"]
    client.create_tags(Resources=[ami], Tags=[{"Key": "airflow-ami:os", "Value": os_name}])
    client.terminate_instances(InstanceIds=[instance])
    return str(ami)


def test_launch_requires_imdsv2_and_teardown_terminates_it(
    aws: list[tuple[str, str, dict[str, Any]]],
) -> None:
    settings = load_settings(cli={"tags": "Team=data"})
    ami = bake_image("us-east-1", "airflow-3.3.2-amazon-linux-2-x86_64-20260101000000")
    launched = ec2.launch(settings, ami)
    run = next(params for _, op, params in aws if op == "RunInstances" and params["ImageId"] == ami)
    assert run["MetadataOptions"]["HttpTokens"] == "required"
    assert run["InstanceType"] == "t3.large"
    client = boto3.client("ec2", region_name="us-east-1")
    instance = client.describe_instances(InstanceIds=[launched.instance_id])["Reservations"][0]["Instances"][
        0
    ]
    tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
    assert tags == {"Team": "data", ec2.LAUNCH_TAG: ami}
    assert ec2.teardown(settings) == [launched.instance_id]
    state = client.describe_instances(InstanceIds=[launched.instance_id])["Reservations"][0]["Instances"][0]
    assert state["State"]["Name"] in ("shutting-down", "terminated")
    assert ec2.teardown(settings) == []


def test_prune_keeps_n_of_this_os_and_leaves_other_images(aws: list[tuple[str, str, dict[str, Any]]]) -> None:
    settings = load_settings()
    ours = [
        bake_image("us-east-1", f"airflow-3.3.2-amazon-linux-2-x86_64-2026010{i}000000") for i in range(3)
    ]
    other = bake_image("us-east-1", "airflow-3.3.2-debian-x86_64-20260101000000", os_name="debian")
    pruned = ec2.prune(settings, keep=1)
    left = {
        i["ImageId"]
        for i in boto3.client("ec2", region_name="us-east-1").describe_images(Owners=["self"])["Images"]
    }
    assert len(pruned) == 2 and set(pruned) < set(ours)
    assert left == (set(ours) - set(pruned)) | {other}
