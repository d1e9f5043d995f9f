"""The AWS cloud: boto3 steps around the build, launch, teardown, prune.

The endpoint comes from settings (moto in tests); credentials from boto3's
usual chain.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import boto3

from .clouds import BuildHost, Instance
from .settings import Settings


def client(settings: Settings, region: str, env: Mapping[str, str] | None = None) -> Any:
    env = env or {}
    session = boto3.session.Session(
        aws_access_key_id=env.get("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY"),
        aws_session_token=env.get("AWS_SESSION_TOKEN"),
        region_name=region,
    )
    return session.client("ec2", endpoint_url=settings.ec2_endpoint or None)


def require_imdsv2(settings: Settings, amis: Mapping[str, str], env: Mapping[str, str] | None = None) -> None:
    """Mark every copy of the AMI IMDSv2-only (Packer 1.6 cannot set imds_support)."""
    for region, ami_id in sorted(amis.items()):
        client(settings, region, env).modify_image_attribute(ImageId=ami_id, ImdsSupport={"Value": "v2.0"})


def image_name(settings: Settings, region: str, ami_id: str, env: Mapping[str, str] | None = None) -> str:
    images = client(settings, region, env).describe_images(ImageIds=[ami_id])["Images"]
    return images[0]["Name"] if images else ""


LAUNCH_TAG = "airflow-ami:launched-from"


def launch(settings: Settings, ami_id: str, env: Mapping[str, str] | None = None) -> Instance:
    """Run one instance of the AMI (IMDSv2 required) and wait until it is running."""
    ec2 = client(settings, settings.region, env)
    params: dict[str, Any] = {
        "ImageId": ami_id,
        "InstanceType": settings.instance_type,
        "MinCount": 1,
        "MaxCount": 1,
        "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled"},
        "TagSpecifications": [
            {
                "ResourceType": "instance",
                "Tags": [
                    *({"Key": k, "Value": v} for k, v in settings.tags),
                    {"Key": LAUNCH_TAG, "Value": ami_id},
                ],
            }
        ],
    }
    if settings.ssh_keypair_name:
        params["KeyName"] = settings.ssh_keypair_name
    if settings.subnet_id:
        params["SubnetId"] = settings.subnet_id
    if settings.iam_instance_profile:
        params["IamInstanceProfile"] = {"Name": settings.iam_instance_profile}
    instance_id = ec2.run_instances(**params)["Instances"][0]["InstanceId"]
    ec2.get_waiter("instance_running").wait(InstanceIds=[instance_id])
    instance = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    return _instance(settings, instance)


def _instance(settings: Settings, described: dict[str, Any]) -> Instance:
    address_key = "PrivateIpAddress" if settings.ssh_interface == "private_ip" else "PublicIpAddress"
    return Instance(
        cloud="aws",
        instance_id=described["InstanceId"],
        ami_id=described["ImageId"],
        region=settings.region,
        address=described.get(address_key, ""),
        ssh_user=settings.ssh_username,
        ssh_key_file=settings.ssh_private_key_file,
    )


def _launched(settings: Settings, env: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """What launch() started in the region and is not terminated (described)."""
    reservations = client(settings, settings.region, env).describe_instances(
        Filters=[
            {"Name": "tag-key", "Values": [LAUNCH_TAG]},
            {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]},
        ]
    )["Reservations"]
    return [i for r in reservations for i in r["Instances"]]


def teardown(settings: Settings, env: Mapping[str, str] | None = None) -> list[str]:
    """Terminate every instance launch() started in the region; returns their ids."""
    ids = sorted(i["InstanceId"] for i in _launched(settings, env))
    if ids:
        client(settings, settings.region, env).terminate_instances(InstanceIds=ids)
    return ids


def prune(
    settings: Settings, keep: int, *, apply: bool = True, env: Mapping[str, str] | None = None
) -> list[str]:
    """All but the newest `keep` AMIs of this OS/arch/prefix; `apply` deregisters them and their snapshots."""
    ec2 = client(settings, settings.region, env)
    images = ec2.describe_images(
        Owners=["self"],
        Filters=[
            {"Name": "name", "Values": [f"{settings.ami_name_prefix}-*-{settings.os}-{settings.arch}-*"]},
            {"Name": "tag:airflow-ami:os", "Values": [settings.os]},
        ],
    )["Images"]
    images.sort(key=lambda image: image["CreationDate"], reverse=True)
    pruned = []
    for image in images[keep:]:
        pruned.append(image["ImageId"])
        if not apply:
            continue
        ec2.deregister_image(ImageId=image["ImageId"])
        for mapping in image.get("BlockDeviceMappings", []):
            snapshot = mapping.get("Ebs", {}).get("SnapshotId")
            if snapshot:
                ec2.delete_snapshot(SnapshotId=snapshot)
    return pruned


class AwsCloud:
    """Packer launches its own build instance; instances run on EC2."""

    name = "aws"

    @contextlib.contextmanager
    def build_host(self, settings: Settings) -> Iterator[BuildHost]:
        yield BuildHost(settings)

    def launch(self, settings: Settings, ami_id: str) -> Instance:
        return launch(settings, ami_id)

    def instances(self, settings: Settings) -> list[Instance]:
        return [_instance(settings, described) for described in _launched(settings)]

    def teardown(self, settings: Settings) -> list[str]:
        return teardown(settings)
