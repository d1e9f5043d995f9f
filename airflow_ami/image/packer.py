"""Driving the packer binary: version, fmt, validate, and a build that streams and cleans up."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

VERSION_RE = re.compile(r"v?(\d+)\.(\d+)\.(\d+)")
# Packer 1.7 moved the builders into plugins: from it on a template declares
# `required_plugins`, and the amazon plugin knows `metadata_options` and
# `imds_support`; 1.6 (Debian's) rejects all three.
PLUGINS_SINCE = (1, 7, 0)
# "==> amazon-ebs.airflow: Launching a source AWS instance..." marks a new phase of the build.
PHASE_RE = re.compile(r"^==> [\w.-]+: (?P<phase>\S.*?)\.*$")
SOURCE_AMI_RE = re.compile(r"Found Image ID: (?P<ami>ami-[0-9a-f]+)")


class PackerError(RuntimeError):
    """packer exited non-zero or could not run."""


def packer_binary() -> str:
    return os.environ.get("PACKER", "packer")


def version() -> tuple[int, int, int]:
    try:
        out = subprocess.run([packer_binary(), "version"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise PackerError(f"cannot run packer ({exc}); run ./bake to install it") from None
    match = VERSION_RE.search(out)
    if not match:
        raise PackerError(f"cannot read the packer version from {out.strip()!r}")
    major, minor, patch = (int(g) for g in match.groups())
    return major, minor, patch


def loads_plugins(version: tuple[int, int, int]) -> bool:
    """Whether this Packer takes required_plugins and the amazon plugin's IMDSv2 options."""
    return version >= PLUGINS_SINCE


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([packer_binary(), *args], cwd=cwd, capture_output=True, text=True, check=False)


def fmt_check(template: Path) -> None:
    result = _run(["fmt", "-check", "-diff", template.name], template.parent)
    if result.returncode != 0:
        raise PackerError(f"{template} is not packer-fmt clean:\n{result.stdout}{result.stderr}")


def validate(template: Path) -> None:
    result = _run(["validate", template.name], template.parent)
    if result.returncode != 0:
        raise PackerError(f"packer validate {template} failed:\n{result.stdout}{result.stderr}")


def _elapsed(start: float) -> str:
    seconds = int(time.monotonic() - start)
    return f"{seconds // 60:02d}:{seconds % 60:02d}"


def build(template: Path, env: Mapping[str, str] | None = None, out: TextIO = sys.stdout) -> str:
    """Run `packer build`, streaming its output with elapsed time and phase lines.

    Returns the source AMI Packer's filter picked.

    Packer runs in its own session so a Ctrl-C reaches it exactly once, from
    us; we then wait while it deletes what it created and report the failure.
    """
    start = time.monotonic()
    proc = subprocess.Popen(
        [packer_binary(), "build", "-color=false", template.name],
        cwd=template.parent,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        start_new_session=True,
    )
    interrupted = False
    source_ami = ""

    def forward(signum: int, _frame: object) -> None:
        nonlocal interrupted
        interrupted = True
        out.write(f"[{_elapsed(start)}] interrupted: packer is cleaning up what it created\n")
        # To the whole group, as a terminal's Ctrl-C: packer runs as a child of a
        # wrapper process of its own, which ignores SIGINT sent to it alone.
        os.killpg(proc.pid, signal.SIGINT)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            phase = PHASE_RE.match(line.strip())
            found = SOURCE_AMI_RE.search(line)
            source_ami = found.group("ami") if found else source_ami
            if phase:
                out.write(f"[{_elapsed(start)}] --- phase: {phase.group('phase')}\n")
            out.write(f"[{_elapsed(start)}] {line}")
            out.flush()
        code = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    out.write(f"[{_elapsed(start)}] packer build exited with status {code}\n")
    if interrupted:
        raise KeyboardInterrupt
    if code != 0:
        raise PackerError(f"packer build failed (status {code}); its output above says where")
    return source_ami
