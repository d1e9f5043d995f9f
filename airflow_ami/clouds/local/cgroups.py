"""One cgroup per instance: its processes kept apart, its instance type's memory, and a
CPU quota when one is asked for.

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

Every local instance sees all of this host's CPUs, so three instances on two CPUs
measure how they share them, not what separate machines give. `--cpu-quota P`
(launch setting, percent of one CPU as systemd's CPUQuota=) bounds each instance:
`cpu.max` where the unified hierarchy has the cpu controller, else
`cpu.cfs_quota_us` of a v1 cpu cgroup (the hybrid layout of this project's hosts).
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


def _v1_parent(controller: str) -> Path | None:
    for fields in _mounts():
        if fields[2] == "cgroup" and controller in fields[3].split(","):
            own = next((p for c, p in _own_paths().items() if controller in c.split(",")), "")
            return Path(fields[1]) / own
    return None


def _unified_has(parent: Path, controller: str) -> bool:
    controllers = parent / "cgroup.controllers"
    return controllers.exists() and controller in controllers.read_text().split()


def instance_cgroups(machine: str, cpu: bool = True) -> list[Path]:
    """The instance's cgroups: the v2 one, and a v1 one for memory (and for cpu, if `cpu`)
    where v2 cannot hold the limit."""
    unified = unified_parent()
    found = [unified / machine] if unified else []
    for controller in ("memory", "cpu") if cpu else ("memory",):
        if unified is None or not _unified_has(unified, controller):
            v1 = _v1_parent(controller)
            found += [v1 / machine] if v1 else []
    return found


# cpu.max's and cpu.cfs_period_us's period (the kernel's default), in microseconds.
CPU_PERIOD_US = 100_000


def _limit(cgroups: list[Path], values: dict[str, str]) -> bool:
    """Write the first of `values`' files (v2's, then v1's) each cgroup has; any written?"""
    limited = False
    for cgroup in cgroups:
        for name, value in values.items():
            if (cgroup / name).exists():
                (cgroup / name).write_text(value)
                limited = True
                break
    return limited


def create(machine: str, memory_bytes: int, cpu_quota_percent: int = 0) -> list[Path]:
    """Make the instance's cgroups with its memory limit and CPU quota (0: none);
    supervise.py moves nspawn into them."""
    cgroups = instance_cgroups(machine, cpu=bool(cpu_quota_percent))
    for cgroup in cgroups:
        cgroup.mkdir(exist_ok=True)
    memory = _limit(cgroups, {"memory.max": str(memory_bytes), "memory.limit_in_bytes": str(memory_bytes)})
    quota = CPU_PERIOD_US * cpu_quota_percent // 100
    cpu = not cpu_quota_percent or _limit(
        cgroups, {"cpu.max": f"{quota} {CPU_PERIOD_US}", "cpu.cfs_quota_us": str(quota)}
    )
    if not (memory and cpu):
        for cgroup in cgroups:
            remove(cgroup)
        missing = "memory" if not memory else "cpu"
        raise LocalCloudError(
            f"no cgroup {missing} controller on this host (neither cgroup v2 with '{missing}' in "
            f"cgroup.controllers nor a v1 {missing} hierarchy): "
            + (
                "an instance could use all of the host's memory; run the local cloud on a host that has one"
                if not memory
                else "launch without --cpu-quota, or on a host that has one"
            )
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
