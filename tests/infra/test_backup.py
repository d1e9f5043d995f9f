"""Backups: a dump and its manifest, in S3 under the deployment (or the instance) when
backup_s3_uri is set; (slow: restoring stops Airflow) a dump, a DAG run dropped, a
restore, the run is back."""

from __future__ import annotations

import json
import posixpath

import pytest

from airflow_ami.driver.instance import FANOUT_DAG, Instance, expect, journal, layout
from airflow_ami.seam import contract


def test_a_dump_goes_to_s3_when_backup_s3_uri_is_set(instance: Instance) -> None:
    plan = json.loads(instance.read_text(layout.DEPLOYMENT_RECORD))
    uri = plan["backup_s3_uri"]
    dumped = instance.sh(f"{layout.BACKUP_CLI} now")
    said = dumped.stdout + dumped.stderr
    assert dumped.rc == 0, expect(
        f"`{layout.BACKUP_CLI} now` to succeed" + (f" and upload to {uri}" if uri else ""),
        f"exit {dumped.rc}: {said.strip()[-800:]}",
        layout.DEPLOYMENT_RECORD,
    )
    dump = said.strip().splitlines()[-1]
    manifest = json.loads(instance.read_text(dump[: -len(".sql.gz")] + ".json"))
    sha256 = instance.check(f"sha256sum {dump}").split()[0]
    assert (manifest["sha256"], manifest["airflow_version"], manifest["dump"]) == (
        sha256,
        instance.settings["airflow_version"],
        posixpath.basename(dump),
    ), expect("a manifest that names the dump, its sha256 and Airflow", manifest, dump)
    assert set(manifest["rows"]) == set(layout.COUNTED_TABLES) and manifest["schema_revision"]
    if not uri:
        assert "backup_s3_uri not set" in said, expect(
            "local dumps only", said[-500:], layout.DEPLOYMENT_RECORD
        )
        return
    owner = plan["deployment"] or json.loads(instance.read_text(layout.FIRSTBOOT_MARKER))["instance_id"]
    bucket, prefix = contract.backup_location(uri, owner)
    for name in (manifest["dump"], manifest["dump"][: -len(".sql.gz")] + ".json"):
        want = f"put s3://{bucket}/{prefix}{name}"
        assert want in said, expect(want, said[-800:], journal(layout.BACKUP_UNIT))


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_a_restored_dump_brings_a_dropped_dag_run_back(instance: Instance) -> None:
    run_id = instance.trigger(FANOUT_DAG, {"n": 2, "seconds": 1})
    run = instance.wait_run(FANOUT_DAG, run_id)
    assert run["state"] == "success", instance.run_summary(run)
    dumped = instance.sh(f"{layout.BACKUP_CLI} now")
    assert dumped.rc == 0 and dumped.stdout.strip().endswith(".sql.gz"), expect(
        f"`{layout.BACKUP_CLI} now` to write a dump to {layout.BACKUP_DIR}",
        f"exit {dumped.rc}: {(dumped.stdout + dumped.stderr).strip()[-500:]}",
        journal(layout.BACKUP_UNIT),
    )
    mode = instance.check(f"stat -c '%a %U' {dumped.stdout.strip().splitlines()[-1]}")
    assert mode.split() == ["600", "airflow"], expect("the dump private to airflow (0600)", mode, "")
    path = f"/api/v2/dags/{FANOUT_DAG}/dagRuns/{run_id}"
    status, _ = instance.api("DELETE", path)
    assert status == 204 and instance.api("GET", path)[0] == 404, f"DELETE {path} -> {status}"
    restored = instance.sh(f"{layout.BACKUP_CLI} restore")
    assert restored.rc == 0, expect(
        f"`{layout.BACKUP_CLI} restore` to load the newest dump",
        f"exit {restored.rc}: {(restored.stdout + restored.stderr).strip()[-800:]}",
        "the output above",
    )
    state = instance.wait_healthy(instance.recovery_timeout)
    assert state["healthy"], instance.health_message(state, "healthy after the restore")
    status, body = instance.api("GET", path)
    assert status == 200 and (body or {}).get("state") == "success", expect(
        f"DAG run {run_id}, dropped after the dump, back after the restore",
        f"GET {path} -> {status} {str(body)[:200]}",
        f"{layout.BACKUP_DIR}; {journal('airflow-api-server.service')}",
    )
