"""`./bake upgrade`: replace a named deployment's instance (a standalone instance, or a
cluster's controller) with another AMI and lose nothing.

    drain        the old instance's DAGs paused (no new runs), running tasks given a
                 bounded time to finish
    final backup Airflow stopped (the downtime starts), a last dump to S3 with its manifest
                 and digests of every connection and variable as they decrypt there
    launch       the new AMI, told to restore exactly that dump before Airflow starts
    healthy      until its API reports every component healthy
    check        row counts of the manifest's tables equal, every connection and variable
                 decrypts to the same digest, the admin logs in with the same password,
                 a canary DAG run succeeds (a cluster's: its workers, told where the new
                 controller is, run it from the DAG bundle)
    switch       the deployment's address moves to the new instance (the downtime ends),
                 the DAGs paused by the drain are unpaused there
    then the old instance is removed.

Any failure before the switch is over removes the new instance and resumes the old one
as it was: Airflow started, its DAGs unpaused, the address back, a cluster's workers back
with it (exit 1, one line naming the step). The deployment's secrets come from its store,
so the new instance decrypts what the old one encrypted and its admin keeps the password.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO

from airflow_ami import health
from airflow_ami.builddir import BuildDir
from airflow_ami.clouds import Cloud, InstanceRecord
from airflow_ami.driver import instance as driver
from airflow_ami.image.record import Baked
from airflow_ami.seam import contract, layout
from airflow_ami.settings import LaunchSettings

STEPS = ("drain", "final backup", "launch", "healthy", "check", "switch")
# The launch settings `./bake upgrade` takes: how its new instance is made. The rest the old
# instance's launch decided (its role, cluster, deployment and backups, its security group,
# its workers) and the new instance keeps them (CloudOperations.launch): not its flags.
# dags_s3_uri and task_logs_s3_uri stand in for what a launch of an older version did not record.
FLAGS = (
    "instance_type",
    "subnet_id",
    "iam_instance_profile",
    "ssh_keypair_name",
    "ssh_private_key_file",
    "volume_size",
    "kms_key_id",
    "tags",
    "cpu_quota",
    "dags_s3_uri",
    "task_logs_s3_uri",
)
# Task states that mean work is still in hand on the old instance.
BUSY = ("running", "queued", "scheduled", "restarting", "up_for_retry", "up_for_reschedule", "deferred")


class UpgradeFailed(RuntimeError):
    """The upgrade stopped at a step; the old instance serves as it did."""


@dataclass
class Backup:
    """The final dump: where it is, what its manifest says, and what it decrypts to."""

    uri: str
    manifest: dict[str, Any]
    digests: dict[str, str]
    plan: dict[str, Any]


@dataclass
class Report:
    old: InstanceRecord
    new: InstanceRecord
    backup: Backup
    downtime_s: float
    timings: dict[str, float] = field(default_factory=dict)


class Operations(Protocol):
    """What an upgrade does to the instances (CloudOperations drives real ones)."""

    def drain(self, old: InstanceRecord) -> list[str]: ...
    def final_backup(self, old: InstanceRecord) -> Backup: ...
    def launch(self, backup: Backup) -> InstanceRecord: ...
    def wait_healthy(self, new: InstanceRecord) -> None: ...
    def check(self, new: InstanceRecord, backup: Backup) -> None: ...
    def switch(self, old: InstanceRecord, new: InstanceRecord, paused: list[str]) -> InstanceRecord: ...
    def remove(self, instance: InstanceRecord) -> None: ...
    def resume(self, old: InstanceRecord, paused: list[str]) -> None: ...


def upgrade(
    ops: Operations,
    old: InstanceRecord,
    out: TextIO = sys.stdout,
    clock: Callable[[], float] = time.monotonic,
) -> Report:
    """Run the steps; before the switch is over a failure (or Ctrl-C) leaves the old instance serving."""
    paused: list[str] = []
    new: InstanceRecord | None = None
    timings: dict[str, float] = {}
    stopped_at = clock()
    step = STEPS[0]
    try:
        for step in STEPS:
            out.write(f"upgrade: --- {step}\n")
            out.flush()
            started = clock()
            if step == "drain":
                paused = ops.drain(old)
            elif step == "final backup":
                stopped_at = clock()
                backup = ops.final_backup(old)
            elif step == "launch":
                new = ops.launch(backup)
            elif step == "healthy":
                ops.wait_healthy(new)  # type: ignore[arg-type]
            elif step == "check":
                ops.check(new, backup)  # type: ignore[arg-type]
            else:
                new = ops.switch(old, new, paused)  # type: ignore[arg-type]
            timings[step] = clock() - started
    except (Exception, KeyboardInterrupt) as exc:
        if new is not None:
            ops.remove(new)
        ops.resume(old, paused)
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        removed = ", the new instance is removed" if new else ""
        raise UpgradeFailed(
            f"upgrade: {step} failed: {why}; {old.instance_id} serves again as it did{removed}"
        ) from exc
    downtime = clock() - stopped_at
    ops.remove(old)
    assert new is not None
    return Report(old, new, backup, downtime, timings)


class CloudOperations:
    """The steps on a cloud's real instances, driven over SSH (airflow_ami/driver)."""

    def __init__(
        self,
        cloud: Cloud,
        settings: LaunchSettings,
        old: InstanceRecord,
        image: Baked,
        out: TextIO,
        *,
        drain_seconds: float = 600.0,
    ) -> None:
        self.cloud, self.settings, self.old, self.image, self.out = cloud, settings, old, image, out
        self.drain_seconds, self.poll = drain_seconds, 2.0
        self.bdir = BuildDir.of(settings)

    def driven(self, instance: InstanceRecord) -> driver.Instance:
        return driver.Instance.of(instance, self.bdir.root / f"ssh_config-{instance.instance_id}")

    def workers(self, controller: InstanceRecord) -> list[InstanceRecord]:
        """The cluster's workers (none for a standalone instance), as cluster.json records them."""
        if controller.role != "controller":
            return []
        record = json.loads(self.bdir.cluster_record.read_text())
        return [InstanceRecord.from_record(m) for m in record["members"] if m["role"] == "worker"]

    def on_the_workers(self, controller: InstanceRecord, command: str) -> None:
        """`provision.py COMMAND` on each worker now (its timer would within minutes)."""
        for worker in self.workers(controller):
            self.driven(worker).check(f"python3 {layout.CODE_DIR}/provision.py {command}")

    def drain(self, old: InstanceRecord) -> list[str]:
        node = self.driven(old)
        status, body = node.api("GET", "/api/v2/dags?paused=false&limit=1000")
        if status != 200:
            raise RuntimeError(f"GET /api/v2/dags on {old.instance_id}: HTTP {status}")
        paused = sorted(dag["dag_id"] for dag in body["dags"])
        for dag_id in paused:
            node.api("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": True})
        states = ", ".join(f"'{s}'" for s in BUSY)
        deadline = time.monotonic() + self.drain_seconds
        while True:
            (busy,) = node.mysql(f"SELECT COUNT(*) FROM airflow.task_instance WHERE state IN ({states})")[0]
            if int(busy) == 0 or time.monotonic() > deadline:
                break
            time.sleep(self.poll)
        self.out.write(f"upgrade: {len(paused)} DAGs paused, {busy} tasks still in hand after the drain\n")
        return paused

    def final_backup(self, old: InstanceRecord) -> Backup:
        node = self.driven(old)
        units = " ".join([layout.SCHEDULER_UNIT, *layout.SERVICE_UNITS, layout.AIRFLOW_TARGET])
        node.check(f"systemctl stop {units}")
        plan = json.loads(node.read_text(layout.DEPLOYMENT_RECORD))
        if not plan.get("backup_s3_uri"):
            raise RuntimeError(
                f"{old.instance_id} puts no dump to S3: launch the deployment with --backup-s3-uri"
                " (the new instance restores the final dump from there)"
            )
        dump = node.check(f"{layout.BACKUP_CLI} now").strip().splitlines()[-1]
        manifest = json.loads(node.read_text(dump[: -len(".sql.gz")] + ".json"))
        bucket, prefix = contract.backup_location(plan["backup_s3_uri"], plan["deployment"])
        return Backup(f"s3://{bucket}/{prefix}{manifest['dump']}", manifest, decrypted_digests(node), plan)

    def launch(self, backup: Backup) -> InstanceRecord:
        settings = dataclasses.replace(
            self.settings,
            role=self.old.role,
            cluster=self.old.cluster,
            workers=0,
            deployment=backup.plan["deployment"],
            restore=backup.uri,
            backup_s3_uri=backup.plan["backup_s3_uri"],
            backup_interval_minutes=backup.plan["backup_interval_minutes"],
            # An instance of an older image recorded none: the upgrade's flag, else the image's.
            task_logs_s3_uri=backup.plan.get("task_logs_s3_uri") or self.settings.task_logs_s3_uri,
        )
        return self.cloud.launch_replacement(settings, self.image)

    def wait_healthy(self, new: InstanceRecord) -> None:
        base = self.cloud.api_url(self.settings, self.image, new)
        if not base:
            raise RuntimeError(f"{new.instance_id}'s API is not reachable from this machine (--allow-cidr)")
        health.wait_healthy(base, self.out)

    def check(self, new: InstanceRecord, backup: Backup) -> None:
        node = self.driven(new)
        tables = layout.COUNTED_TABLES
        sql = " UNION ALL ".join(f"SELECT '{t}', COUNT(*) FROM airflow.`{t}`" for t in tables)
        rows = {name: int(count) for name, count in node.mysql(sql)}
        if rows != backup.manifest["rows"]:
            raise RuntimeError(
                f"row counts differ: the dump had {backup.manifest['rows']}, the new instance {rows}"
            )
        digests = decrypted_digests(node)
        differ = sorted(k for k in backup.digests if digests.get(k) != backup.digests[k])
        if differ:
            raise RuntimeError(f"{', '.join(differ)} do not decrypt to what they were on the old instance")
        login = node.probe("token-check")
        if login.get("status") not in (200, 201) or not login.get("token_is_jwt"):
            raise RuntimeError(
                f"the admin cannot log in with the deployment's password: {login.get('status')}"
            )
        if new.role == "controller":
            # The new controller said where it is at first boot: its workers follow it now.
            self.on_the_workers(new, "refresh-secrets")
            with node.in_the_bundle(driver.CANARY_DAG):
                run = node.wait_run(driver.CANARY_DAG, node.trigger(driver.CANARY_DAG))
        else:
            run = node.wait_run(driver.CANARY_DAG, node.trigger(driver.CANARY_DAG))
        node.cleanup()  # the canary DAG, its run and its logs: nothing else
        if run.get("state") != "success":
            raise RuntimeError(f"the canary DAG run ended {run.get('state')}: {node.run_summary(run)}")
        self.out.write(
            "upgrade: checked "
            + ", ".join(f"{t} {n}" for t, n in sorted(rows.items()))
            + f"; {len(backup.digests)} digests equal; admin login; canary run\n"
        )

    def switch(self, old: InstanceRecord, new: InstanceRecord, paused: list[str]) -> InstanceRecord:
        moved = self.cloud.move_address(self.settings, new) if new.deployment else new
        node = self.driven(moved)
        for dag_id in paused:
            node.api("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
        self.bdir.write(self.bdir.instance_record, moved.as_record())
        if moved.role == "controller":
            record = json.loads(self.bdir.cluster_record.read_text())
            record["members"] = [
                moved.as_record() if m["instance_id"] == old.instance_id else m for m in record["members"]
            ]
            self.bdir.write(self.bdir.cluster_record, record)
        return moved

    def remove(self, instance: InstanceRecord) -> None:
        self.cloud.remove_instance(self.settings, instance)

    def resume(self, old: InstanceRecord, paused: list[str]) -> None:
        node = self.driven(old)
        node.check(f"systemctl start {layout.AIRFLOW_TARGET}")
        node.wait_healthy(300)
        for dag_id in paused:
            node.api("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
        if old.deployment_address:
            self.cloud.move_address(self.settings, old)
        if old.role == "controller":
            node.check(f"python3 {layout.CODE_DIR}/provision.py publish-controller")
            self.on_the_workers(old, "refresh-secrets")


# On the instance: the exports in one canonical form (they differ between Airflow releases
# in layout, not in content), each hashed; only the digests leave the instance.
DIGESTS = r"""
import hashlib, json, os, sys
folder = sys.argv[1]
def load(name):
    with open(os.path.join(folder, name)) as fh:
        return json.load(fh)
def canonical(value):
    if isinstance(value, str):
        try:
            return canonical(json.loads(value))
        except ValueError:
            return value
    if isinstance(value, dict):
        return {k: canonical(v) for k, v in value.items() if v not in (None, "", {})}
    return value
fields = ("conn_type", "host", "login", "password", "schema", "port", "extra")
connections = {k: canonical({f: v.get(f) for f in fields}) for k, v in load("connections.json").items()}
variables = {k: canonical(v) for k, v in load("variables.json").items()}
digest = lambda doc: hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
print(json.dumps({"connections": digest(connections), "variables": digest(variables)}))
"""


def decrypted_digests(node: driver.Instance) -> dict[str, str]:
    """sha256 of every connection and every variable as the instance decrypts them, and of
    the admin password: what crosses to this machine are digests, never the values."""
    cli = layout.AIRFLOW_CLI
    script = (
        f'd=$(mktemp -d) && chown {layout.AIRFLOW_USER} "$d"'
        f' && {cli} connections export "$d/connections.json" --file-format json >/dev/null'
        f' && {cli} variables export "$d/variables.json" >/dev/null'
        f' && python3 -c {shlex.quote(DIGESTS)} "$d"; status=$?; rm -rf "$d"; exit $status'
    )
    found = dict(json.loads(node.check(script).strip().splitlines()[-1]))
    found["admin password"] = node.check(f"sha256sum {shlex.quote(layout.ADMIN_PASSWORD_FILE)}").split()[0]
    return found
