"""The pipeline on any cloud: bake an AMI, launch an instance of it, verify it, tear it down.

What was launched is recorded in build/<build-name>/instance.json (the last
launch) and, for a cluster's controller and workers, cluster.json, so that
separate `launch`, `verify` and `teardown` runs find it.
"""

from __future__ import annotations

import datetime
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TextIO

from airflow_ami import health, verify
from airflow_ami import upgrade as replacement
from airflow_ami.builddir import BuildDir, MissingRecord
from airflow_ami.clouds import Cloud, InstanceRecord
from airflow_ami.clouds.aws import AwsCloud, port_forward_command
from airflow_ami.clouds.local import LocalCloud
from airflow_ami.driver import instance as driver
from airflow_ami.image import amis, build
from airflow_ami.image.record import Baked
from airflow_ami.seam import layout
from airflow_ami.settings import BakeSettings, LaunchSettings, Target
from airflow_ami.settings.fields import SettingsError

CLOUDS: dict[str, Callable[[], Cloud]] = {"aws": AwsCloud, "local": LocalCloud}


def cloud_for(settings: Target) -> Cloud:
    return CLOUDS[settings.cloud]()


def image_of(target: Target, ami_id: str) -> Baked:
    """What `ami_id` was baked with (its record, else its tags on the target's cloud)."""
    cloud = cloud_for(target)
    return Baked.of(target, ami_id, lambda ami: cloud.image_tags(target, ami))


def image_to_launch(settings: LaunchSettings, ami_id: str) -> Baked:
    """ami_id's decisions, refused (before anything is made) when it was baked for another OS
    or arch than the launch's: the launch's own defaults, its instance type, follow those."""
    image = image_of(settings, ami_id)
    for name in ("os", "arch"):
        baked, given = getattr(image, name), getattr(settings, name)
        if baked != given:
            raise SettingsError(name, f"{baked}, what {ami_id} was baked for (--{name} {baked})", given)
    return image


def build_image(settings: BakeSettings, out: TextIO = sys.stdout) -> dict[str, Any]:
    """build-ami on the settings' cloud; returns the AMI record plus the build's `timings`."""
    with cloud_for(settings).build_host(settings) as host:
        started = time.monotonic()
        record = build.build_ami(host.settings, env=host.env, out=out)
        host.timings["packer_build"] = time.monotonic() - started
        host.keep_image(record)
    return {**record, "timings": host.timings}


def launch(
    settings: LaunchSettings, ami_id: str = "", out: TextIO = sys.stdout, wait: bool = True
) -> list[InstanceRecord]:
    """Launch the instance, or with --workers N (no --role) a controller and N workers;
    record them, and (`wait`) wait until Airflow is healthy. The controller comes first.

    Everything the image decided (its API port and TLS, its users) comes from the
    AMI's record or tags, never from a launch flag."""
    bdir = BuildDir.of(settings)
    ami_id = ami_id or bdir.read(bdir.ami_record, "run `./bake build-ami` first or pass --ami")["ami_id"]
    cloud = cloud_for(settings)
    image = image_to_launch(settings, ami_id)
    if settings.workers and settings.role == "standalone":
        members = cloud.launch_cluster(settings, image)
    else:
        members = [cloud.launch(settings, image)]
    head = members[0]
    bdir.write(bdir.instance_record, head.as_record())
    if head.role != "standalone":
        recorded = [*cluster_members(bdir, head.cluster), *(m.as_record() for m in members)]
        bdir.write(bdir.cluster_record, {"cluster": head.cluster, "members": recorded})
    if wait and head.role != "worker":
        wait_for_airflow(settings, image, head, out)
    return members


def wait_for_airflow(target: Target, image: Baked, instance: InstanceRecord, out: TextIO) -> None:
    base = cloud_for(target).api_url(target, image, instance)
    if base:
        health.wait_healthy(base, out)
    else:
        out.write(
            "launch: the API is not reachable from this machine (no --allow-cidr: no inbound rule);"
            f" forward it with: {port_forward_command(image, instance)}\n"
        )


def ready(target: Target, instance: InstanceRecord) -> list[str]:
    """Where the UI is (a deployment's address, which outlives the instance), who logs in,
    and the command that fetches the password."""
    image = image_of(target, instance.ami_id)
    base = cloud_for(target).api_url(target, image, instance) or image.api_url("localhost")
    if instance.deployment_address:
        base = image.api_url(instance.deployment_address)
    cloud = "" if target.cloud == "aws" else f" --cloud {target.cloud}"
    lines = [
        f"url: {base}/",
        f"admin user: {image.admin_username}",
        f"admin password: ./bake ssh{cloud} -- sudo cat {layout.ADMIN_PASSWORD_FILE}",
    ]
    profile = f" --profile {target.profile}" if target.profile else ""
    where = f" --region {target.region}{profile}"
    if image.admin_password_store == "ssm":
        lines.append(
            f"  or: aws ssm get-parameter --name {image.admin_password_name} --with-decryption"
            f" --query Parameter.Value --output text{where}"
        )
    elif image.admin_password_store == "secretsmanager":
        lines.append(
            f"  or: aws secretsmanager get-secret-value --secret-id {image.admin_password_name}"
            f" --query SecretString --output text{where}"
        )
    return lines


def launched(bdir: BuildDir) -> InstanceRecord:
    """The instance the last launch recorded or, when that was a worker, its controller."""
    last = InstanceRecord.from_record(
        bdir.read(bdir.instance_record, "nothing launched: run `./bake launch` first")
    )
    if last.role != "worker":
        return last
    members = [InstanceRecord.from_record(m) for m in cluster_members(bdir, last.cluster)]
    return next((m for m in members if m.role == "controller"), last)


def ssh_argv(settings: Target, command: Sequence[str] = ()) -> list[str]:
    """ssh to the launched instance (a cluster's controller), running `command` if given."""
    bdir = BuildDir.of(settings)
    instance = launched(bdir)
    if not instance.address:
        raise MissingRecord(
            f"{instance.instance_id} has no address this machine can use: launch with"
            " --ssh-interface private_ip from inside its VPC, or reach it with `aws ssm start-session`"
        )
    # A file of its own: `ssh` beside a running `verify` must not rewrite the suite's known hosts.
    config = verify.ssh_config(bdir.root / f"ssh_config-{instance.instance_id}", instance)
    return ["ssh", "-F", str(config), f"{instance.ssh_user}@{instance.address}", *command]


def status(settings: Target) -> dict[str, Any]:
    """What the last launch runs, whether it runs, and Airflow's health (None: not reachable)."""
    bdir = BuildDir.of(settings)
    head = launched(bdir)
    cloud = cloud_for(settings)
    live = {i.instance_id: i for i in cloud.instances(settings)}
    members = (
        [InstanceRecord.from_record(m) for m in cluster_members(bdir, head.cluster)]
        if head.cluster
        else [head]
    )
    members += [i for i in live.values() if i.cluster == head.cluster and i not in members and head.cluster]
    base = cloud.api_url(settings, image_of(settings, head.ami_id), head) if head.instance_id in live else ""
    body = health.read(base) if base else None
    healthy = health.is_healthy(body) if base else None
    rows = [{**m.as_record(), "running": m.instance_id in live} for m in members]
    return {
        "cloud": settings.cloud,
        "instances": rows,
        "api_url": base,
        "health": health.components(body) if base else None,
        "healthy": healthy,
        "tasks": task_figures(bdir, head) if healthy else None,
        "ok": all(r["running"] for r in rows) and healthy is not False,
    }


def task_figures(bdir: BuildDir, head: InstanceRecord) -> dict[str, int] | None:
    """The database node's task figures over SSH; None when SSH does not reach it (an
    instance without an inbound rule, reached through SSM only)."""
    try:
        return driver.Instance.of(head, bdir.root / f"ssh_config-{head.instance_id}").task_figures()
    except (driver.InstanceError, OSError, RuntimeError):  # testinfra: RuntimeError when ssh fails
        return None


def status_text(report: dict[str, Any]) -> str:
    lines = [
        f"{r['role']:<10} {r['instance_id']:<21} {r['address'] or '-':<15} "
        + ("running" if r["running"] else "gone")
        for r in report["instances"]
    ]
    if report["healthy"] is None:
        lines.append("airflow: not reachable from this machine (see `./bake launch`'s port forwarding line)")
    else:
        parts = ", ".join(f"{k} {v}" for k, v in report["health"].items())
        lines.append(
            f"airflow: {'healthy' if report['healthy'] else 'UNHEALTHY'} at {report['api_url']} ({parts})"
        )
    if report["tasks"] is not None:
        lines.append("tasks: " + ", ".join(f"{count} {what}" for what, count in report["tasks"].items()))
    return "\n".join(lines) + "\n"


def cluster_members(out: BuildDir, cluster: str) -> list[dict[str, Any]]:
    """The members cluster.json records for `cluster` (none for another cluster's record)."""
    try:
        record = out.read(out.cluster_record, "")
    except MissingRecord:
        return []
    return list(record["members"]) if record.get("cluster") == cluster else []


def instances(settings: Target) -> list[InstanceRecord]:
    return cloud_for(settings).instances(settings)


def verify_instance(
    settings: Target, cluster: str = "", host: str = "", pytest_args: Sequence[str] = ()
) -> int:
    """Run the testinfra suite against --host, or else the instance `launch` recorded
    (with a cluster: its controller, told where the workers are). The whole suite passing
    on a launched instance tags its AMI verified (prune-amis counts only those)."""
    if host:
        return verify.run_suite(host, pytest_args=pytest_args)
    out = BuildDir.of(settings)
    if cluster:
        code, ami_id = verify_cluster(out, cluster, pytest_args)
    else:
        instance = InstanceRecord.from_record(
            out.read(out.instance_record, "run `./bake launch` first or pass --host")
        )
        config = verify.ssh_config(out.ssh_config, instance)
        code = verify.run_suite(f"ssh://{instance.ssh_user}@{instance.address}", config, pytest_args)
        ami_id = instance.ami_id
    if code == 0 and not pytest_args:
        now = datetime.datetime.now(datetime.UTC)
        amis.mark_verified(cloud_for(settings).client(settings, "ec2"), ami_id, now)
    return code


def verify_cluster(out: BuildDir, cluster: str, pytest_args: Sequence[str]) -> tuple[int, str]:
    """The suite on the controller, told where the workers are (tests/infra/test_cluster.py);
    its exit status and the controller's AMI."""
    members = [InstanceRecord.from_record(m) for m in cluster_members(out, cluster)]
    controllers = [m for m in members if m.role == "controller"]
    if not controllers:
        raise MissingRecord(
            f"no controller of cluster {cluster} in {out.cluster_record}: launch one with"
            f" `./bake launch --role controller --cluster {cluster}`"
        )
    config = verify.ssh_config(out.ssh_config, *members)
    workers = [f"--airflow-ami-worker=ssh://{m.ssh_user}@{m.address}" for m in members if m.role == "worker"]
    host = f"ssh://{controllers[0].ssh_user}@{controllers[0].address}"
    return verify.run_suite(host, config, [*workers, *pytest_args]), controllers[0].ami_id


def teardown(settings: Target) -> list[str]:
    removed = cloud_for(settings).teardown(settings)
    out = BuildDir.of(settings)
    out.instance_record.unlink(missing_ok=True)
    out.cluster_record.unlink(missing_ok=True)
    return removed


@contextmanager
def phase(name: str, timings: dict[str, float], out: TextIO, task: str = "rehearse") -> Iterator[None]:
    out.write(f"{task}: --- {name}\n")
    out.flush()
    start = time.monotonic()
    try:
        yield
    finally:
        timings[name] = time.monotonic() - start


def reusable_ami(settings: Target) -> str:
    """The last build's AMI if the local cloud still holds its image, else ""."""
    out = BuildDir.of(settings)
    try:
        ami_id = str(out.read(out.ami_record, "")["ami_id"])
    except MissingRecord:
        return ""
    return ami_id if LocalCloud().has_image(ami_id) else ""


def rehearse(
    settings: BakeSettings,
    launching: LaunchSettings,
    pytest_args: Sequence[str] = (),
    out: TextIO = sys.stdout,
    ami_id: str = "",
) -> int:
    """build-ami -> launch -> verify -> teardown; teardown runs whatever happens.

    With `ami_id` (--ami): that AMI, no bake (this week's image verified again). With
    --workers N: the last build's AMI if it is still there (else a build), a controller
    and N workers of --cluster (default "rehearsal"), the cluster verified.
    """
    if ami_id and not amis.AMI_ID_RE.match(ami_id):
        raise SettingsError(
            "ami", "an AMI id: ami- and 8 to 17 hex digits, as `./bake build-ami` prints", ami_id
        )
    timings: dict[str, float] = {}
    details: dict[str, float] = {}
    status = "failed"
    code = 1
    try:
        if ami_id:
            out.write(f"rehearse: rehearsing {ami_id} (--ami: no bake)\n")
        elif launching.workers:
            ami_id = reusable_ami(settings)
            if ami_id:
                out.write(f"rehearse: reusing {ami_id} (build/{settings.build_name}/ami.json)\n")
        if not ami_id:
            with phase("build-ami", timings, out):
                record = build_image(settings)
            details, ami_id = record["timings"], record["ami_id"]
        with phase("launch", timings, out):
            launch(launching, ami_id, out)
        with phase("verify", timings, out):
            code = verify_instance(launching, launching.cluster, pytest_args=pytest_args)
        status = "passed" if code == 0 else "verify failed"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        with phase("teardown", timings, out):
            teardown(settings)
        out.write(summary(status, timings, details))
    return code


def upgrade(
    settings: LaunchSettings, ami_id: str = "", out: TextIO = sys.stdout, drain_seconds: float = 600.0
) -> replacement.Report:
    """`./bake upgrade`: the launched instance of a named deployment replaced by an instance
    of `ami_id` (default: the last build's), losing nothing (airflow_ami/upgrade.py)."""
    bdir = BuildDir.of(settings)
    old = launched(bdir)
    if not old.deployment:
        raise MissingRecord(
            f"{old.instance_id} is not of a named deployment: an upgrade replaces the instance of one"
            " (launch it with --deployment NAME, or a cluster, and --backup-s3-uri)"
        )
    ami_id = ami_id or bdir.read(bdir.ami_record, "run `./bake build-ami` first or pass --ami")["ami_id"]
    cloud = cloud_for(settings)
    ops = replacement.CloudOperations(
        cloud, settings, old, image_to_launch(settings, ami_id), out, drain_seconds=drain_seconds
    )
    report = replacement.upgrade(ops, old, out)
    bdir.write(
        bdir.upgrade_record,
        {
            "old": old.instance_id,
            "new": report.new.instance_id,
            "ami_id": ami_id,
            "rows_checked": report.backup.manifest["rows"],
            "downtime_s": round(report.downtime_s, 1),
            "step_seconds": {k: round(v, 1) for k, v in report.timings.items()},
        },
    )
    out.write(
        f"upgrade: {old.instance_id} ({old.ami_id}) replaced by {report.new.instance_id} ({ami_id});"
        f" downtime {report.downtime_s:.1f} s (Airflow stopped on the old instance to the new one serving)\n"
    )
    return report


def summary(status: str, timings: dict[str, float], details: dict[str, float]) -> str:
    """Phase durations; `details` (the build's own steps) indented under build-ami."""
    lines = [f"rehearse: {status}"]
    for name, seconds in timings.items():
        lines.append(f"  {name:<14} {seconds:7.1f} s")
        if name == "build-ami":
            lines += [f"    {step:<12} {took:7.1f} s" for step, took in details.items()]
    lines.append(f"  {'total':<14} {sum(timings.values()):7.1f} s")
    return "\n".join(lines) + "\n"
