"""One cgroup (v2) per instance.

With no systemd on the host, nspawn --keep-unit leaves every container in the
caller's cgroup, so two instances' systemds share unit cgroups (same names):
a stop then waits for processes of the other instance and runs into its
timeout, and a reboot can hang. A child cgroup of our own per instance keeps
them apart.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from .system import PREFIX


def _unified_mount() -> Path | None:
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if fields[2] == "cgroup2":
            return Path(fields[1])
    return None


def _own_path() -> str:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            return line[3:].lstrip("/")
    return ""


def parent() -> Path | None:
    """Where our instances' cgroups go: below the cgroup this process runs in."""
    mount = _unified_mount()
    return mount / _own_path() if mount else None


def instance_cgroup(machine: str) -> Path | None:
    base = parent()
    return base / machine if base else None


def create(cgroup: Path | None) -> Path | None:
    """The cgroup, made if need be; supervise.py moves itself (and so nspawn) into it."""
    if cgroup is not None:
        cgroup.mkdir(exist_ok=True)
    return cgroup


def remove(cgroup: Path | None) -> bool:
    """rmdir the cgroup and what the container made below it, deepest first; once empty of processes."""
    if cgroup is None or not cgroup.exists():
        return False
    for path in sorted(
        (p for p in cgroup.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True
    ):
        with contextlib.suppress(OSError):
            path.rmdir()
    with contextlib.suppress(OSError):
        cgroup.rmdir()
    return not cgroup.exists()


def ours() -> list[Path]:
    base = parent()
    return sorted(base.glob(f"{PREFIX}*")) if base and base.exists() else []
