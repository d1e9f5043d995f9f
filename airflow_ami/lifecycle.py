"""After the bake: launch an instance of the AMI, verify it, tear it down; per cloud.

`aws` uses boto3 (ec2.py); `local` uses the local cloud (localcloud/). What was
launched is recorded in build/<build-name>/instance.json so that separate
`launch`, `verify` and `teardown` runs find it.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from . import build, ec2, localcloud, verify
from .render import build_dir
from .settings import Settings


class LifecycleError(RuntimeError):
    """A launch/verify/teardown step cannot go on; says what to run first."""


def _read(path: Path, what: str, hint: str) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise LifecycleError(f"no {what} at {path}: {hint}") from None


def bake(settings: Settings) -> dict[str, Any]:
    if settings.cloud == "local":
        return localcloud.build_ami_local(settings)
    return build.build_ami(settings)


def launch(settings: Settings, ami_id: str = "") -> dict[str, Any]:
    ami_id = (
        ami_id
        or _read(
            build_dir(settings) / "ami.json", "AMI record", "run `./bake build-ami` first or pass --ami"
        )["ami_id"]
    )
    if settings.cloud == "local":
        instance = localcloud.launch_local(ami_id, region=settings.region, ssh_user=settings.ssh_username)
    else:
        instance = {
            **ec2.launch(settings, ami_id),
            "ami_id": ami_id,
            "ssh_user": settings.ssh_username,
            "ssh_key_file": settings.ssh_private_key_file,
        }
    instance["cloud"] = settings.cloud
    path = build_dir(settings) / "instance.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(instance, indent=2, sort_keys=True) + "\n")
    return instance


def verify_instance(settings: Settings, host: str = "", pytest_args: Sequence[str] = ()) -> int:
    """Run the testinfra suite against --host, or else the instance `launch` recorded."""
    if host:
        return verify.run_suite(host, pytest_args=pytest_args)
    instance = _read(
        build_dir(settings) / "instance.json", "launched instance", "run `./bake launch` first or pass --host"
    )
    config = None
    if instance.get("ssh_key_file"):
        config = verify.ssh_config(build_dir(settings) / "ssh_config", instance["ssh_key_file"])
    return verify.run_suite(f"ssh://{instance['ssh_user']}@{instance['address']}", config, pytest_args)


def teardown(settings: Settings) -> list[str]:
    removed = localcloud.teardown_local() if settings.cloud == "local" else ec2.teardown(settings)
    (build_dir(settings) / "instance.json").unlink(missing_ok=True)
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


def rehearse(settings: Settings, pytest_args: Sequence[str] = (), out: TextIO = sys.stdout) -> int:
    """build-ami -> launch -> verify -> teardown in the local cloud; teardown runs whatever happens."""
    timings: dict[str, float] = {}
    details: dict[str, float] = {}
    status = "failed"
    code = 1
    try:
        with phase("build-ami", timings, out):
            record = bake(settings)
        details = record.get("timings", {})
        with phase("launch", timings, out):
            launch(settings, record["ami_id"])
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
    """Phase durations; `details` (the local build's own steps) indented under build-ami."""
    lines = [f"rehearse: {status}"]
    for name, seconds in timings.items():
        lines.append(f"  {name:<14} {seconds:7.1f} s")
        if name == "build-ami":
            lines += [f"    {step:<12} {took:7.1f} s" for step, took in details.items()]
    lines.append(f"  {'total':<14} {sum(timings.values()):7.1f} s")
    return "\n".join(lines) + "\n"
