"""The pipeline on any cloud: bake an AMI, launch an instance of it, verify it, tear it down.

What was launched is recorded in build/<build-name>/instance.json so that
separate `launch`, `verify` and `teardown` runs find it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TextIO

from . import build, verify
from .builddir import BuildDir
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
    return instance


def instances(settings: Settings) -> list[Instance]:
    return cloud_for(settings).instances(settings)


def verify_instance(settings: Settings, host: str = "", pytest_args: Sequence[str] = ()) -> int:
    """Run the testinfra suite against --host, or else the instance `launch` recorded."""
    if host:
        return verify.run_suite(host, pytest_args=pytest_args)
    out = BuildDir.of(settings)
    instance = Instance.from_record(out.read(out.instance_record, "run `./bake launch` first or pass --host"))
    config = verify.ssh_config(out.ssh_config, instance.ssh_key_file) if instance.ssh_key_file else None
    return verify.run_suite(f"ssh://{instance.ssh_user}@{instance.address}", config, pytest_args)


def teardown(settings: Settings) -> list[str]:
    removed = cloud_for(settings).teardown(settings)
    BuildDir.of(settings).instance_record.unlink(missing_ok=True)
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
    """build-ami -> launch -> verify -> teardown; teardown runs whatever happens."""
    timings: dict[str, float] = {}
    details: dict[str, float] = {}
    status = "failed"
    code = 1
    try:
        with phase("build-ami", timings, out):
            record = bake(settings)
        details = record["timings"]
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
    """Phase durations; `details` (the build's own steps) indented under build-ami."""
    lines = [f"rehearse: {status}"]
    for name, seconds in timings.items():
        lines.append(f"  {name:<14} {seconds:7.1f} s")
        if name == "build-ami":
            lines += [f"    {step:<12} {took:7.1f} s" for step, took in details.items()]
    lines.append(f"  {'total':<14} {sum(timings.values()):7.1f} s")
    return "\n".join(lines) + "\n"
