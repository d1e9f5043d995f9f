"""Forgetting a deployment is explicit and names it: its secrets (either store) and its
backups go, nothing else does; a deployment launched here is not forgotten (moto)."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest

from airflow_ami import deployments
from airflow_ami.builddir import BuildDir
from airflow_ami.clouds import InstanceRecord
from airflow_ami.seam import contract
from airflow_ami.settings import LaunchSettings, load

pytestmark = pytest.mark.slow  # moto plays SSM, Secrets Manager and S3

REGION = "us-east-1"


def settings(**cli: str) -> LaunchSettings:
    return load(LaunchSettings, cli={"cloud": "aws", "region": REGION, **cli})


def remembered(name: str) -> None:
    """What a deployment leaves: its secrets in SSM, a controller's address in Secrets Manager, dumps."""
    boto3.client("ssm", region_name=REGION).put_parameter(
        Name=contract.deployment_secret_name("ssm", name), Value="{}", Type="SecureString"
    )
    boto3.client("secretsmanager", region_name=REGION).create_secret(
        Name=contract.deployment_controller_name("secretsmanager", name), SecretString="{}"
    )
    s3 = boto3.client("s3", region_name=REGION)
    if not s3.list_buckets()["Buckets"]:
        s3.create_bucket(Bucket="dumps")
    for key in ("airflow-1.sql.gz", "airflow-1.json"):
        s3.put_object(Bucket="dumps", Key=f"nightly/{name}/{key}", Body=b"x")


def test_forget_lists_then_deletes_one_deployment_s_secrets_and_backups(
    aws: object, build_root: Path
) -> None:
    remembered("prod")
    remembered("staging")
    found = deployments.forget(settings(deployment="prod", backup_s3_uri="s3://dumps/nightly"), apply=False)
    assert sorted(found) == [
        "s3://dumps/nightly/prod/airflow-1.json",
        "s3://dumps/nightly/prod/airflow-1.sql.gz",
        "secretsmanager airflow-ami/prod/controller",
        "ssm /airflow-ami/prod/secrets",
    ]
    assert (
        deployments.forget(settings(deployment="prod", backup_s3_uri="s3://dumps/nightly"), apply=True)
        == found
    )
    assert (
        deployments.forget(settings(deployment="prod", backup_s3_uri="s3://dumps/nightly"), apply=False) == []
    )
    assert (
        len(
            deployments.forget(
                settings(deployment="staging", backup_s3_uri="s3://dumps/nightly"), apply=False
            )
        )
        == 4
    )


def test_a_deployment_launched_here_is_not_forgotten(aws: object, build_root: Path) -> None:
    bdir = BuildDir.of(settings())
    here = InstanceRecord("aws", "i-1", "ami-1", REGION, "203.0.113.9", "ec2-user", "k", deployment="prod")
    bdir.write(bdir.instance_record, here.as_record())
    with pytest.raises(deployments.DeploymentError, match="teardown"):
        deployments.forget(settings(deployment="prod"), apply=True)
