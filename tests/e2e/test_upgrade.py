"""State outlives instances, end to end: a named deployment on Airflow 3.2.2 holding DAG
runs with XComs, an encrypted Connection and Variable and a second user is upgraded to the
rehearsal's 3.3.2 image with `./bake upgrade` (drain, final backup, restore, migrate,
checks, address switch); then its instance is lost and `./bake launch --restore latest`
brings the deployment back from its last backup.

Runs after the rehearsal (file order): its 3.3.2 AMI is the upgrade's target.
"""

from __future__ import annotations

import json
import secrets
import shlex
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_ami.clouds import InstanceRecord
from airflow_ami.clouds.local import LocalCloud
from airflow_ami.driver.instance import FANOUT_DAG, Instance
from airflow_ami.lifecycle import reusable_ami
from airflow_ami.seam import layout
from airflow_ami.settings import LaunchSettings, load
from tests.e2e.conftest import REPO, bake, driven, our_leftovers

OLD_BUILD = "debian-x86_64-local-3.2.2"
BUILD = ("--cloud", "local", "--build-name", OLD_BUILD)
DEPLOYMENT = "e2e-upgrade"
BACKUPS = "s3://airflow-ami-e2e-deployments/dumps"
NAMED = ("--deployment", DEPLOYMENT, "--backup-s3-uri", BACKUPS)
VARIABLE, CONNECTION, USER = "airflow_ami_e2e_upgrade", "airflow_ami_e2e_upgrade", "e2e_viewer"
VALUE, PASSWORD = f"value-{secrets.token_hex(8)}", f"password-{secrets.token_hex(8)}"


def head() -> InstanceRecord:
    return InstanceRecord.from_record(json.loads((REPO / "build" / OLD_BUILD / "instance.json").read_text()))


def admin_password_digest(node: Instance) -> str:
    return node.check(f"sha256sum {layout.ADMIN_PASSWORD_FILE}").split()[0]


def cli_json(node: Instance, args: str) -> Any:
    """An `airflow ... -o json` command's document: its last line (3.2.2's CLI logs to stdout
    before it, which 3.3.2's does not; the verify suite holds the image to that)."""
    result = node.airflow(args)
    assert result.rc == 0, f"airflow {args}: exit {result.rc}: {result.stderr[-500:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def what_survives(node: Instance) -> dict[str, Any]:
    """The Variable and the Connection as they decrypt, the second user, the runs and XComs,
    the admin password's digest (the values stay on the instance but these test ones)."""
    variable = node.airflow(f"variables get {VARIABLE}")
    counts = node.mysql("SELECT (SELECT COUNT(*) FROM airflow.dag_run), (SELECT COUNT(*) FROM airflow.xcom)")[
        0
    ]
    return {
        "variable": variable.stdout.strip().splitlines()[-1] if variable.rc == 0 else f"exit {variable.rc}",
        "connection password": cli_json(node, f"connections get {CONNECTION} -o json")[0]["password"],
        "users": sorted(u["username"] for u in cli_json(node, "users list -o json")),
        "dag runs, xcoms": counts,
        "admin password": admin_password_digest(node),
        "airflow": node.airflow("version").stdout.strip().splitlines()[-1],
    }


@pytest.fixture(scope="module")
def deployment() -> Iterator[dict[str, Any]]:
    """A 3.2.2 instance of the deployment with data in it; what it holds before the upgrade."""
    # The rehearsal's 3.3.2 AMI, unless the local cloud pruned it since: then one is baked.
    target = reusable_ami(load(LaunchSettings, cli={"cloud": "local"}))
    if not target:
        assert bake("build-ami", "--cloud", "local").returncode == 0, "build-ami of 3.3.2 failed"
        target = reusable_ami(load(LaunchSettings, cli={"cloud": "local"}))
    built = bake(
        "build-ami",
        *BUILD,
        "--airflow-version",
        "3.2.2",
        "--constraints",
        "constraints/airflow-3.2.2-python3.14.txt",
    )
    try:
        assert built.returncode == 0, "build-ami of Airflow 3.2.2 failed; its output is above"
        assert bake("launch", *BUILD, *NAMED).returncode == 0, "launch of the 3.2.2 deployment failed"
        node = driven(head())
        node.check(f"{layout.AIRFLOW_CLI} variables set {VARIABLE} {shlex.quote(VALUE)}")
        node.check(
            f"{layout.AIRFLOW_CLI} connections add {CONNECTION} --conn-type generic"
            f" --conn-login someone --conn-password {shlex.quote(PASSWORD)}"
        )
        node.check(
            f"{layout.AIRFLOW_CLI} users create --username {USER} --firstname E2e --lastname Viewer"
            f" --email {USER}@localhost --role Viewer --password {secrets.token_hex(12)}"
        )
        for _ in range(2):
            run = node.wait_run(FANOUT_DAG, node.trigger(FANOUT_DAG, {"n": 2, "seconds": 1}))
            assert run["state"] == "success", node.run_summary(run)
        before = what_survives(node)
        assert before["variable"] == VALUE and before["connection password"] == PASSWORD
        assert "3.2.2" in before["airflow"] and int(before["dag runs, xcoms"][1]) >= 4
        yield {"target": target, "before": before}
    finally:
        # moto's store and buckets go with the local cloud: nothing to forget.
        assert bake("teardown", "--cloud", "local").returncode == 0
        assert our_leftovers() == []


def test_upgrade_to_3_3_2_keeps_every_row_value_user_and_login(deployment: dict[str, Any]) -> None:
    old = head()
    result = bake("upgrade", *BUILD, "--ami", deployment["target"])
    assert result.returncode == 0, "upgrade failed; its output is above"
    assert "downtime" in result.stdout and "checked " in result.stdout
    new = head()
    assert new.instance_id != old.instance_id and new.ami_id == deployment["target"]
    assert new.deployment_address == old.deployment_address != "", "the deployment's address moved"
    assert old.instance_id not in {
        i.instance_id for i in LocalCloud().instances(load(LaunchSettings, cli={"cloud": "local"}))
    }
    after = what_survives(driven(new))
    assert "3.3.2" in after["airflow"]
    assert {k: v for k, v in after.items() if k != "airflow"} == {
        k: v for k, v in deployment["before"].items() if k != "airflow"
    }
    record = json.loads((REPO / "build" / OLD_BUILD / "upgrade.json").read_text())
    assert record["new"] == new.instance_id and record["downtime_s"] > 0, record
    assert set(record["rows_checked"]) >= {"dag_run", "task_instance", "xcom", "connection", "variable"}
    status = bake("status", *BUILD, "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["healthy"] is True


def test_a_lost_instance_comes_back_from_the_deployment_s_last_backup(deployment: dict[str, Any]) -> None:
    lost = head()
    node = driven(lost)
    run = node.wait_run(FANOUT_DAG, node.trigger(FANOUT_DAG, {"n": 2, "seconds": 1}))
    assert run["state"] == "success", node.run_summary(run)
    node.check(f"{layout.BACKUP_CLI} now")
    last = what_survives(node)
    LocalCloud().remove_instance(load(LaunchSettings, cli={"cloud": "local"}), lost)  # gone, no final backup
    back = bake("launch", *BUILD, *NAMED, "--restore", "latest", "--ami", lost.ami_id)
    assert back.returncode == 0, "launch --restore latest failed; its output is above"
    restored = head()
    assert restored.instance_id != lost.instance_id
    assert what_survives(driven(restored)) == last
