"""The pipeline on any cloud: bake an AMI, launch an instance of it, verify it, tear it down.

What was launched is recorded in build/<build-name>/instance.json (the last
launch) and, for a cluster's controller and workers, cluster.json, so that
separate `launch`, `verify` and `teardown` runs find it.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TextIO

from . import build, verify
from .builddir import BuildDir, MissingRecord
from .clouds import Cloud, Instance
from .ec2 import AwsCloud
from .localcloud import LocalCloud
from .settings import Settings

CLOUDS: dict[str, Callable[[], Cloud]] = {"aws": AwsCloud, "local": LocalCloud}


def cloud_for(settings: Settings) -> Cloud:
    return CLOUDS[settings.cloud]()


def bake(settings: Settings) -> dict[str, Any]:
    """build-ami on the settings' cloud; returns the AMI record plus the build's `timings`."""
    with cloud_for(settings).build_host(settings) as host:
        started = time.monotonic()
        record = build.build_ami(host.settings, env=host.env)
        host.timings["packer_build"] = time.monotonic() - started
        host.keep_image(record)
    return {**record, "timings": host.timings}


def launch(settings: Settings, ami_id: str = "") -> Instance:
    out = BuildDir.of(settings)
    ami_id = ami_id or out.read(out.ami_record, "run `./bake build-ami` first or pass --ami")["ami_id"]
    instance = cloud_for(settings).launch(settings, ami_id)
    out.write(out.instance_record, instance.as_record())
    if instance.role != "standalone":
        members = [*cluster_members(out, instance.cluster), instance.as_record()]
        out.write(out.cluster_record, {"cluster": instance.cluster, "members": members})
    return instance


def cluster_members(out: BuildDir, cluster: str) -> list[dict[str, Any]]:
    """The members cluster.json records for `cluster` (none for another cluster's record)."""
    try:
        record = out.read(out.cluster_record, "")
    except MissingRecord:
        return []
    return list(record["members"]) if record.get("cluster") == cluster else []


def instances(settings: Settings) -> list[Instance]:
    return cloud_for(settings).instances(settings)


def verify_instance(settings: Settings, host: str = "", pytest_args: Sequence[str] = ()) -> int:
    """Run the testinfra suite against --host, or else the instance `launch` recorded."""
    if host:
        return verify.run_suite(host, pytest_args=pytest_args)
    out = BuildDir.of(settings)
    if settings.cluster:
        return verify_cluster(out, settings.cluster, pytest_args)
    instance = Instance.from_record(out.read(out.instance_record, "run `./bake launch` first or pass --host"))
    config = verify.ssh_config(out.ssh_config, instance.ssh_key_file) if instance.ssh_key_file else None
    return verify.run_suite(f"ssh://{instance.ssh_user}@{instance.address}", config, pytest_args)


def verify_cluster(out: BuildDir, cluster: str, pytest_args: Sequence[str]) -> int:
    """The suite on the controller, told where the workers are (tests/infra/test_cluster.py)."""
    members = [Instance.from_record(m) for m in cluster_members(out, cluster)]
    controllers = [m for m in members if m.role == "controller"]
    if not controllers:
        raise MissingRecord(
            f"no controller of cluster {cluster} in {out.cluster_record}: launch one with"
            f" `./bake launch --role controller --cluster {cluster}`"
        )
    config = verify.ssh_config(out.ssh_config, *(m.ssh_key_file for m in members))
    workers = [f"--airflow-ami-worker=ssh://{m.ssh_user}@{m.address}" for m in members if m.role == "worker"]
    host = f"ssh://{controllers[0].ssh_user}@{controllers[0].address}"
    return verify.run_suite(host, config, [*workers, *pytest_args])


def teardown(settings: Settings) -> list[str]:
    removed = cloud_for(settings).teardown(settings)
    out = BuildDir.of(settings)
    out.instance_record.unlink(missing_ok=True)
    out.cluster_record.unlink(missing_ok=True)
    return removed


@contextmanager
def phase(name: str, timings: dict[str, float], out: TextIO) -> Iterator[None]:
    out.write(f"rehearse: --- {name}\n")
    out.flush()
    start = time.monotonic()
    try:
        yield
    finally:
        timings[name] = time.monotonic() - start


def reusable_ami(settings: Settings) -> str:
    """The last build's AMI if the local cloud still holds its image, else ""."""
    out = BuildDir.of(settings)
    try:
        ami_id = str(out.read(out.ami_record, "")["ami_id"])
    except MissingRecord:
        return ""
    return ami_id if LocalCloud().has_image(ami_id) else ""


def rehearse(settings: Settings, pytest_args: Sequence[str] = (), out: TextIO = sys.stdout) -> int:
    """build-ami -> launch -> verify -> teardown; teardown runs whatever happens.

    With --workers N: the last build's AMI if it is still there (else a build), a
    controller and N workers of --cluster (default "rehearsal"), the cluster verified.
    """
    timings: dict[str, float] = {}
    details: dict[str, float] = {}
    status = "failed"
    code = 1
    try:
        ami_id = reusable_ami(settings) if settings.workers else ""
        if ami_id:
            out.write(f"rehearse: reusing {ami_id} (build/{settings.build_name}/ami.json)\n")
        else:
            with phase("build-ami", timings, out):
                record = bake(settings)
            details, ami_id = record["timings"], record["ami_id"]
        if settings.workers:
            with phase("launch-controller", timings, out):
                launch(dataclasses.replace(settings, role="controller"), ami_id)
            with phase("launch-workers", timings, out):
                for _ in range(settings.workers):
                    launch(dataclasses.replace(settings, role="worker"), ami_id)
        else:
            with phase("launch", timings, out):
                launch(settings, ami_id)
        with phase("verify", timings, out):
            code = verify_instance(settings, pytest_args=pytest_args)
        status = "passed" if code == 0 else "verify failed"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        with phase("teardown", timings, out):
            teardown(settings)
        out.write(summary(status, timings, details))
    return code


def summary(status: str, timings: dict[str, float], details: dict[str, float]) -> str:
    """Phase durations; `details` (the build's own steps) indented under build-ami."""
    lines = [f"rehearse: {status}"]
    for name, seconds in timings.items():
        lines.append(f"  {name:<14} {seconds:7.1f} s")
        if name == "build-ami":
            lines += [f"    {step:<12} {took:7.1f} s" for step, took in details.items()]
    lines.append(f"  {'total':<14} {sum(timings.values()):7.1f} s")
    return "\n".join(lines) + "\n"
