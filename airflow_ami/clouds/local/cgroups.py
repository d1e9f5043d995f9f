"""One cgroup per instance: its processes kept apart, and its instance type's memory.

With no systemd on the host, nspawn --keep-unit leaves every container in the
caller's cgroup, so two instances' systemds share unit cgroups (same names):
a stop then waits for processes of the other instance and runs into its
timeout, and a reboot can hang. A child cgroup (v2) of our own per instance
keeps them apart.

An EC2 instance has the memory of its type, and a task that runs past it is
killed by the kernel inside the instance, not elsewhere. The same limit holds
here: `memory.max` of that cgroup where the unified hierarchy has the memory
controller, else (a hybrid host keeps it in v1) `memory.limit_in_bytes` of a v1
memory cgroup of the same name. A host with neither cannot run the local cloud
safely: one runaway task would take the whole machine.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from airflow_ami.clouds.local.system import PREFIX, LocalCloudError


def _mounts() -> list[list[str]]:
    return [line.split() for line in Path("/proc/self/mounts").read_text().splitlines()]


def _own_paths() -> dict[str, str]:
    """This process's cgroup per hierarchy: "" for the unified one, else its controllers."""
    paths = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        paths[controllers] = path.lstrip("/")
    return paths


def unified_parent() -> Path | None:
    """Where our instances' v2 cgroups go: below the cgroup this process runs in."""
    for fields in _mounts():
        if fields[2] == "cgroup2":
            return Path(fields[1]) / _own_paths().get("", "")
    return None


def _v1_memory_parent() -> Path | None:
    for fields in _mounts():
        if fields[2] == "cgroup" and "memory" in fields[3].split(","):
            own = next((p for c, p in _own_paths().items() if "memory" in c.split(",")), "")
            return Path(fields[1]) / own
    return None


def _unified_has_memory(parent: Path) -> bool:
    controllers = parent / "cgroup.controllers"
    return controllers.exists() and "memory" in controllers.read_text().split()


def instance_cgroups(machine: str) -> list[Path]:
    """The instance's cgroups: the v2 one, and a v1 memory one where v2 cannot hold the limit."""
    unified = unified_parent()
    found = [unified / machine] if unified else []
    if unified is None or not _unified_has_memory(unified):
        v1 = _v1_memory_parent()
        found += [v1 / machine] if v1 else []
    return found


def create(machine: str, memory_bytes: int) -> list[Path]:
    """Make the instance's cgroups with its memory limit; supervise.py moves nspawn into them."""
    cgroups = instance_cgroups(machine)
    limited = False
    for cgroup in cgroups:
        cgroup.mkdir(exist_ok=True)
        if (cgroup / "memory.max").exists():
            (cgroup / "memory.max").write_text(str(memory_bytes))
            limited = True
        elif (cgroup / "memory.limit_in_bytes").exists():
            (cgroup / "memory.limit_in_bytes").write_text(str(memory_bytes))
            limited = True
    if not limited:
        for cgroup in cgroups:
            remove(cgroup)
        raise LocalCloudError(
            "no cgroup memory controller on this host (neither cgroup v2 with 'memory' in "
            "cgroup.controllers nor a v1 memory hierarchy): an instance could use all of the "
            "host's memory; run the local cloud on a host that has one"
        )
    return cgroups


def remove(cgroup: Path) -> bool:
    """rmdir the cgroup and what the container made below it, deepest first; once empty of processes."""
    if not cgroup.exists():
        return False
    for path in sorted(
        (p for p in cgroup.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True
    ):
        with contextlib.suppress(OSError):
            path.rmdir()
    with contextlib.suppress(OSError):
        cgroup.rmdir()
    return not cgroup.exists()


def remove_instance(machine: str) -> None:
    for cgroup in instance_cgroups(machine):
        remove(cgroup)


def ours() -> list[Path]:
    parents = {path.parent for path in instance_cgroups(PREFIX)}
    return sorted(p for parent in parents if parent.exists() for p in parent.glob(f"{PREFIX}*"))
