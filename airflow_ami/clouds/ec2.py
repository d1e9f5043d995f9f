"""boto3 clients and the EC2 calls around an image (launches: aws.py).

The endpoint comes from settings (moto in tests); credentials from boto3's
usual chain, or --profile.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import boto3

from airflow_ami.settings import BakeSettings, Target


def client(settings: Target, region: str, env: Mapping[str, str] | None = None, service: str = "ec2") -> Any:
    """A boto3 client of --profile (or the default chain) in `region`; `env` holds a build's own keys."""
    env = env or {}
    session = boto3.session.Session(
        aws_access_key_id=env.get("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY"),
        aws_session_token=env.get("AWS_SESSION_TOKEN"),
        region_name=region,
        profile_name=settings.profile or None,
    )
    endpoint = settings.ec2_endpoint if service == "ec2" else ""
    return session.client(service, endpoint_url=endpoint or None)


def require_imdsv2(
    settings: BakeSettings, amis: Mapping[str, str], env: Mapping[str, str] | None = None
) -> None:
    """Mark every copy of the AMI IMDSv2-only (Packer 1.6 cannot set imds_support)."""
    for region, ami_id in sorted(amis.items()):
        client(settings, region, env).modify_image_attribute(ImageId=ami_id, ImdsSupport={"Value": "v2.0"})


def image_name(settings: BakeSettings, region: str, ami_id: str, env: Mapping[str, str] | None = None) -> str:
    images = client(settings, region, env).describe_images(ImageIds=[ami_id])["Images"]
    return images[0]["Name"] if images else ""


def image_tags(target: Target, ami_id: str) -> dict[str, str]:
    """An AMI's tags in the target's region (empty when no such AMI is visible)."""
    images = client(target, target.region).describe_images(ImageIds=[ami_id])["Images"]
    return {t["Key"]: t["Value"] for t in (images[0].get("Tags") or [])} if images else {}
