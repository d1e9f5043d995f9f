"""boto3 steps after the build, against moto (never real AWS)."""

from __future__ import annotations

from typing import Any

import boto3
import botocore.client
import pytest

from airflow_ami.clouds import ec2
from airflow_ami.settings import BakeSettings, load

# Moto plays EC2 for every test: out of the fast loop (-m "not slow").
pytestmark = pytest.mark.slow


def register(region: str, name: str) -> str:
    client = boto3.client("ec2", region_name=region)
    return str(client.register_image(Name=name, RootDeviceName="/dev/xvda")["ImageId"])


def test_every_copy_of_the_ami_is_made_imdsv2_only(aws: list[tuple[str, str, dict[str, Any]]]) -> None:
    amis = {"us-east-1": register("us-east-1", "airflow-a"), "eu-west-1": register("eu-west-1", "airflow-b")}
    ec2.require_imdsv2(load(BakeSettings), amis)
    modified = [(region, params) for region, op, params in aws if op == "ModifyImageAttribute"]
    assert modified == [
        ("eu-west-1", {"ImageId": amis["eu-west-1"], "ImdsSupport": {"Value": "v2.0"}}),
        ("us-east-1", {"ImageId": amis["us-east-1"], "ImdsSupport": {"Value": "v2.0"}}),
    ]


def test_a_missing_ami_is_an_error(aws: list[tuple[str, str, dict[str, Any]]]) -> None:
    with pytest.raises(botocore.exceptions.ClientError):
        ec2.require_imdsv2(load(BakeSettings), {"us-east-1": "ami-12345678"})


def test_image_name_reads_the_registered_name(aws: list[tuple[str, str, dict[str, Any]]]) -> None:
    ami = register("us-east-1", "airflow-3.3.2-x")
    assert ec2.image_name(load(BakeSettings), "us-east-1", ami) == "airflow-3.3.2-x"
