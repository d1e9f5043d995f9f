"""Options off by default, end to end, on an image baked with them (the rehearsal keeps
the defaults): `api_tls: self-signed` and `backup_s3_uri`.

- TLS: first boot makes the instance's certificate, the API serves HTTPS only, and the
  in-host clients use it (the tasks reach the execution API through it; the suite's
  probe verifies it as every name of the instance).
- Backups to S3: the instance puts its dump with its role's credentials, to the local
  cloud's moto as it would to S3; the object is read back from moto here.

Bakes under its own build name, before the rehearsal runs (file order).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator

import pytest

from airflow_ami.clouds.local.moto import moto_client
from airflow_ami.clouds.local.state import load_state
from airflow_ami.clouds.local.system import cache_dir
from tests.e2e.conftest import REPO, bake, our_leftovers

BUILD_NAME = "debian-x86_64-local-options"
BUCKET, PREFIX = "airflow-ami-e2e-backups", "nightly"
OPTIONS = ("--build-name", BUILD_NAME)
CHECKS = "test_network or test_dag_runs or test_airflow or test_a_dump_goes_to_s3"
MUST_PASS = (
    "test_network.py::test_api_tls_as_configured",
    "test_dag_runs.py::test_fanout_runs_in_parallel",
    "test_backup.py::test_a_dump_goes_to_s3_when_backup_s3_uri_is_set",
)


def s3() -> object:
    moto = load_state(cache_dir())["moto"]
    assert moto, "moto is not running: the build should have started it"
    return moto_client("s3", int(moto["port"]), "us-east-1")


@pytest.fixture(scope="module")
def launched() -> Iterator[dict[str, object]]:
    built = bake(
        "build-ami",
        "--cloud",
        "local",
        *OPTIONS,
        "--api-tls",
        "self-signed",
        "--backup-s3-uri",
        f"s3://{BUCKET}/{PREFIX}",
    )
    try:
        assert built.returncode == 0, "build-ami with the options failed; its output is above"
        s3().create_bucket(Bucket=BUCKET)
        assert bake("launch", "--cloud", "local", *OPTIONS).returncode == 0, "launch failed"
        yield json.loads((REPO / "build" / BUILD_NAME / "ami.json").read_text())
    finally:
        assert bake("teardown", "--cloud", "local").returncode == 0
        assert our_leftovers() == []


def test_tls_and_s3_backups_work_on_an_image_baked_with_them(launched: dict[str, object]) -> None:
    result = bake("verify", "--cloud", "local", *OPTIONS, "--", "-q", "-rA", "-m", "not slow", "-k", CHECKS)
    assert result.returncode == 0, "verify failed on the options image; its output is above"
    for check in MUST_PASS:
        assert f"PASSED tests/infra/{check}" in result.stdout, f"{check} did not run and pass"
    objects = s3().list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}/").get("Contents", [])
    assert objects, f"no dump under s3://{BUCKET}/{PREFIX}/ in moto"
    body = s3().get_object(Bucket=BUCKET, Key=objects[-1]["Key"])["Body"].read()
    assert b"CREATE TABLE `dag_run`" in gzip.decompress(body), "the object is not a dump of the database"
