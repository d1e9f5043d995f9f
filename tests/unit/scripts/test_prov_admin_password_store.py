"""The stdlib SSM / Secrets Manager calls, against moto's server (signature format, JSON
protocol, create-then-update), read back with boto3."""

import pytest
from provfakes import aws_client
from provisioning.shared.awsapi import (
    get_s3_object,
    list_s3_keys,
    put_s3_object,
    put_secretsmanager_secret,
    put_ssm_parameter,
    query_call,
)

CREDS = {"access_key": "AKIDTESTTESTTEST", "secret_key": "secret", "token": None}


def test_ssm_secure_string_is_written_and_overwritten(endpoint):
    put_ssm_parameter("/airflow/admin-password", "First1Password", "eu-west-1", CREDS, endpoint)
    put_ssm_parameter("/airflow/admin-password", "Second2Password", "eu-west-1", CREDS, endpoint)
    got = aws_client("ssm", endpoint).get_parameter(Name="/airflow/admin-password", WithDecryption=True)[
        "Parameter"
    ]
    assert got["Type"] == "SecureString"
    assert got["Value"] == "Second2Password"


def test_secretsmanager_creates_then_updates(endpoint):
    put_secretsmanager_secret("airflow/admin", "First1Password", "eu-west-1", CREDS, endpoint)
    put_secretsmanager_secret("airflow/admin", "Second2Password", "eu-west-1", CREDS, endpoint)
    got = aws_client("secretsmanager", endpoint).get_secret_value(SecretId="airflow/admin")
    assert got["SecretString"] == "Second2Password"


def test_an_s3_object_is_put_and_read_back(endpoint):
    s3 = aws_client("s3", endpoint)
    s3.create_bucket(Bucket="airflow-backups", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    put_s3_object(
        "airflow-backups",
        "i-1/airflow-20261126T000000Z.sql.gz",
        b"dump",
        "eu-west-1",
        CREDS,
        endpoint=endpoint,
    )
    got = s3.get_object(Bucket="airflow-backups", Key="i-1/airflow-20261126T000000Z.sql.gz")["Body"].read()
    assert got == b"dump"
    with pytest.raises(OSError, match="HTTP 404"):
        put_s3_object("no-such-bucket", "k", b"x", "eu-west-1", CREDS, endpoint=endpoint)
    assert (
        get_s3_object(
            "airflow-backups", "i-1/airflow-20261126T000000Z.sql.gz", "eu-west-1", CREDS, endpoint=endpoint
        )
        == b"dump"
    )
    assert get_s3_object("airflow-backups", "i-1/none.sql.gz", "eu-west-1", CREDS, endpoint=endpoint) is None
    for n in range(3):
        put_s3_object(
            "airflow-backups", f"prod/airflow-{n}.json", b"{}", "eu-west-1", CREDS, endpoint=endpoint
        )
    keys = list_s3_keys("airflow-backups", "prod/", "eu-west-1", CREDS, endpoint=endpoint)
    assert keys == [f"prod/airflow-{n}.json" for n in range(3)]


def test_a_query_protocol_call_is_signed_and_answered(endpoint):
    """CloudWatch speaks the Query protocol: a form POST (what metrics and scale-in use)."""
    root = query_call(
        "monitoring",
        "PutMetricData",
        {"Namespace": "Probe", "MetricData.member.1.MetricName": "up", "MetricData.member.1.Value": "1"},
        "eu-west-1",
        CREDS,
        version="2010-08-01",
        endpoint=endpoint,
    )
    assert root.tag.endswith("PutMetricDataResponse")
    metrics = aws_client("cloudwatch", endpoint).list_metrics(Namespace="Probe")["Metrics"]
    assert [m["MetricName"] for m in metrics] == ["up"]
    with pytest.raises(OSError, match="monitoring NoSuchAction: HTTP "):
        query_call(
            "monitoring", "NoSuchAction", {}, "eu-west-1", CREDS, version="2010-08-01", endpoint=endpoint
        )
