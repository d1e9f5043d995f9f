"""Options off by default, end to end, on one image baked with them all (the rehearsal keeps
the defaults): `api_tls: self-signed`, `backup_s3_uri` and `unit_directives: amazon-linux-2`.

- TLS: first boot makes the instance's certificate, the API serves HTTPS only, and the
  in-host clients use it (the tasks reach the execution API through it; the suite's
  probe verifies it as every name of the instance).
- Backups to S3: the instance puts its dump with its role's credentials, to the local
  cloud's moto as it would to S3; the object is read back from moto here.
- Amazon Linux 2's unit sandbox, live: systemd 219's directive set (ProtectSystem=full,
  ReadWriteDirectories=, none of the newer directives) boots through first boot and the
  verify suite. The local cloud runs Debian only, but a directive means on today's systemd
  what it meant on 219 (`full` makes /usr and /etc read-only there too), so a first boot
  that cannot write /etc/airflow under that set fails here as it would on Amazon Linux 2.

One image for the three: each bake and launch costs the suite minutes. Bakes under its own
build name, before the rehearsal runs (file order).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator

import pytest

from airflow_ami.clouds.local.moto import moto_client
from airflow_ami.clouds.local.state import load_state
from airflow_ami.clouds.local.system import cache_dir
from airflow_ami.driver.instance import AIRFLOW_UNITS
from airflow_ami.seam import layout
from tests.e2e.conftest import REPO, bake, our_leftovers

BUILD_NAME = "debian-x86_64-local-options"
BUCKET, PREFIX = "airflow-ami-e2e-backups", "nightly"
OPTIONS = ("--cloud", "local", "--build-name", BUILD_NAME)
# Exposure is rated against today's directives: 219's set is not held to it here.
CHECKS = (
    "(test_network or test_dag_runs or test_airflow or test_a_dump_goes_to_s3 or test_services"
    " or test_sandbox or test_security) and not exposure"
)
# (test, the end of its parameter id): each must have run and passed.
MUST_PASS = (
    ("test_network.py::test_api_tls_as_configured", ""),
    ("test_dag_runs.py::test_fanout_runs_in_parallel", ""),
    ("test_backup.py::test_a_dump_goes_to_s3_when_backup_s3_uri_is_set", ""),
    ("test_services.py::test_firstboot_done", ""),
    *(
        ("test_sandbox.py::test_a_service_s_sandbox_holds_as_its_directives_say", f"{u}]")
        for u in AIRFLOW_UNITS
    ),
)


def s3() -> object:
    moto = load_state(cache_dir())["moto"]
    assert moto, "moto is not running: the build should have started it"
    return moto_client("s3", int(moto["port"]), "us-east-1")


def passed(output: str, test: str, param_end: str) -> bool:
    lines = output.splitlines()
    return any(line.startswith(f"PASSED tests/infra/{test}") and line.endswith(param_end) for line in lines)


@pytest.fixture(scope="module")
def launched() -> Iterator[dict[str, object]]:
    built = bake(
        "build-ami",
        *OPTIONS,
        "--api-tls",
        "self-signed",
        "--backup-s3-uri",
        f"s3://{BUCKET}/{PREFIX}",
        "--unit-directives",
        "amazon-linux-2",
    )
    try:
        assert built.returncode == 0, "build-ami with the options failed; its output is above"
        s3().create_bucket(Bucket=BUCKET)
        launch = bake("launch", *OPTIONS)
        assert launch.returncode == 0, "launch failed (first boot under the AL2 sandbox?); output above"
        yield json.loads((REPO / "build" / BUILD_NAME / "ami.json").read_text())
    finally:
        assert bake("teardown", "--cloud", "local").returncode == 0
        assert our_leftovers() == []


def test_tls_s3_backups_and_the_amazon_linux_2_sandbox_work_on_an_image_baked_with_them(
    launched: dict[str, object],
) -> None:
    assert launched["unit_directives"] == "amazon-linux-2"
    units = bake("ssh", *OPTIONS, "--", "systemctl", "cat", layout.FIRSTBOOT_UNIT, *layout.SERVICE_UNITS)
    assert units.returncode == 0, units.stderr
    assert "ProtectSystem=full" in units.stdout and "ProtectSystem=strict" not in units.stdout
    assert f"ReadWriteDirectories={' '.join(layout.FIRSTBOOT_WRITES)}" in units.stdout
    result = bake("verify", *OPTIONS, "--", "-q", "-rA", "-m", "not slow", "-k", CHECKS)
    assert result.returncode == 0, "verify failed on the options image; its output is above"
    for test, param_end in MUST_PASS:
        assert passed(result.stdout, test, param_end), f"{test} ...{param_end} did not run and pass"
    objects = s3().list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}/").get("Contents", [])
    dumps = [o["Key"] for o in objects if o["Key"].endswith(".sql.gz")]
    assert dumps, f"no dump under s3://{BUCKET}/{PREFIX}/ in moto"
    body = s3().get_object(Bucket=BUCKET, Key=dumps[-1])["Body"].read()
    assert b"CREATE TABLE `dag_run`" in gzip.decompress(body), "the object is not a dump of the database"
