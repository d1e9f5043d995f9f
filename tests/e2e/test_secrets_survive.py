"""Data is never lost: encrypted values and the admin's login survive a reboot with IMDS
down, a first boot killed halfway, and an image made from a used instance (a new identity).

Runs on the AMI the rehearsal (test_rehearsal.py, before this module) built.
"""

from __future__ import annotations

import json
import secrets
import shlex
import time
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_ami.clouds import InstanceRecord
from airflow_ami.clouds.local import LocalCloud
from airflow_ami.driver.instance import Instance
from airflow_ami.lifecycle import image_of
from airflow_ami.seam import layout
from airflow_ami.settings import LaunchSettings, load
from tests.e2e.conftest import BUILD, driven, identity, our_leftovers

SETTINGS = load(LaunchSettings, cli={"cloud": "local"})
VARIABLE, CONNECTION = "airflow_ami_e2e_kept", "airflow_ami_e2e_kept"
VALUE, PASSWORD = f"value-{secrets.token_hex(8)}", f"password-{secrets.token_hex(8)}"
FERNET = "secret AIRFLOW__CORE__FERNET_KEY"


def firstboot_done(host: Instance, timeout: float = 400) -> dict[str, Any]:
    """Wait for first boot and health; returns the record first boot wrote."""
    deadline = time.monotonic() + timeout
    while host.sh(f"systemctl is-active {layout.FIRSTBOOT_UNIT}").stdout.strip() != "active":
        assert time.monotonic() < deadline, host.sh(f"journalctl -u {layout.FIRSTBOOT_UNIT} -n 40").stdout
        time.sleep(3)
    state = host.wait_healthy(300)
    assert state["healthy"], host.health_message(state, "after first boot")
    return dict(json.loads(host.read_text(layout.FIRSTBOOT_MARKER)))


def assert_values_decrypt_and_the_admin_logs_in(host: Instance, when: str) -> None:
    variable = host.airflow(f"variables get {VARIABLE}")
    assert variable.rc == 0 and variable.stdout.strip() == VALUE, f"{when}: variable {variable.stdout!r}"
    connection = host.airflow(f"connections get {CONNECTION} -o json")
    assert connection.rc == 0, f"{when}: {connection.stderr[-500:]}"
    assert json.loads(connection.stdout)[0]["password"] == PASSWORD, f"{when}: connection password"
    login = host.probe("token-check")
    assert login["status"] in (200, 201) and login["token_is_jwt"], f"{when}: admin login {login}"


@pytest.fixture(scope="module")
def cloud() -> Iterator[LocalCloud]:
    cloud = LocalCloud()
    yield cloud
    cloud.teardown(SETTINGS)
    assert our_leftovers() == []


@pytest.fixture(scope="module")
def first(cloud: LocalCloud) -> tuple[InstanceRecord, Instance]:
    """An instance of the rehearsal's AMI holding an encrypted Variable and Connection."""
    ami = json.loads((BUILD / "ami.json").read_text())["ami_id"]
    instance = cloud.launch(SETTINGS, image_of(SETTINGS, ami))
    host = driven(instance)
    firstboot_done(host)
    host.check(f"{layout.AIRFLOW_CLI} variables set {VARIABLE} {shlex.quote(VALUE)}")
    host.check(
        f"{layout.AIRFLOW_CLI} connections add {CONNECTION} --conn-type generic"
        f" --conn-login someone --conn-password {shlex.quote(PASSWORD)}"
    )
    encrypted = host.mysql(
        f"SELECT (SELECT is_encrypted FROM airflow.variable WHERE `key` = '{VARIABLE}'),"
        f" (SELECT is_encrypted FROM airflow.connection WHERE conn_id = '{CONNECTION}')"
    )
    assert encrypted == [["1", "1"]], "the values must be stored encrypted with the fernet key"
    assert_values_decrypt_and_the_admin_logs_in(host, "on the first instance")
    return instance, host


def test_a_reboot_with_imds_down_keeps_every_secret(
    first: tuple[InstanceRecord, Instance], cloud: LocalCloud
) -> None:
    instance, host = first
    before = identity(host.host)
    cloud.metadata_service(instance.instance_id, running=False)
    try:
        host.reboot()
        host.reset_connection()
        record = firstboot_done(host)
    finally:
        cloud.metadata_service(instance.instance_id, running=True)
    journal = host.sh(f"journalctl -b -u {layout.FIRSTBOOT_UNIT} -o cat").stdout
    assert "the identity is unknown" in journal and "first boot already done" in journal, journal[-2000:]
    assert identity(host.host) == before
    assert record["instance_id"] == instance.instance_id
    assert_values_decrypt_and_the_admin_logs_in(host, "after a reboot with IMDS down")


@pytest.mark.parametrize("killed_at", ["write_secrets_env", "check_the_schema"])
def test_a_first_boot_killed_halfway_ends_correct(
    first: tuple[InstanceRecord, Instance], killed_at: str
) -> None:
    _, host = first
    before = {k: v for k, v in identity(host.host).items() if k.startswith("secret")}
    since = host.check("date +%s").strip()
    # As if first boot had never finished: no record, then run it and kill it mid-step.
    host.check(f"rm -f {layout.FIRSTBOOT_MARKER} && systemctl restart --no-block {layout.FIRSTBOOT_UNIT}")
    deadline = time.monotonic() + 300
    while (
        f"==> {killed_at}"
        not in host.sh(f"journalctl -u {layout.FIRSTBOOT_UNIT} --since @{since} -o cat").stdout
    ):
        assert time.monotonic() < deadline, f"first boot never reached {killed_at}"
        time.sleep(0.5)
    host.check(f"systemctl kill -s KILL {layout.FIRSTBOOT_UNIT}")
    host.check(f"systemctl restart {layout.FIRSTBOOT_UNIT}")  # the next boot's run
    record = firstboot_done(host)
    assert record["mode"] == "complete"
    after = {k: v for k, v in identity(host.host).items() if k.startswith("secret")}
    assert after == before, "a first boot that had secrets kept them"
    assert_values_decrypt_and_the_admin_logs_in(host, f"after first boot was killed in {killed_at}")


def test_an_image_of_a_used_instance_rotates_and_keeps_the_values(
    first: tuple[InstanceRecord, Instance], cloud: LocalCloud
) -> None:
    instance, host = first
    fernet_before = identity(host.host)[FERNET]
    ami = cloud.image_from_instance(
        SETTINGS, instance.instance_id, f"airflow-ami-e2e-used-{secrets.token_hex(4)}"
    )
    copy = driven(cloud.launch(SETTINGS, image_of(SETTINGS, ami)))
    record = firstboot_done(copy)
    assert record["mode"] == "rotate", record
    keys = copy.check(f"sed -n 's/^AIRFLOW__CORE__FERNET_KEY=//p' {layout.SECRETS_ENV} | tr -cd , | wc -c")
    assert keys.strip() == "0", "one fernet key once rotate-fernet-key is done (the old one dropped)"
    assert identity(copy.host)[FERNET] != fernet_before
    assert_values_decrypt_and_the_admin_logs_in(copy, "on an instance of an image of a used instance")
