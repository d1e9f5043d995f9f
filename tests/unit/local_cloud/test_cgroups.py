"""cgroups.py: every instance gets its memory limit (and a CPU quota when asked), on any
cgroup layout, or none starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_ami.clouds.local import cgroups
from airflow_ami.clouds.local.system import LocalCloudError

MACHINE = "aa-i-0123"
LIMIT = 8 << 30


def fake_host(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    *,
    v2_memory: bool,
    v1_memory: bool,
    v2_cpu: bool = False,
    v1_cpu: bool = False,
) -> Path:
    unified, v1, v1_cpu_root = tmp_path / "unified", tmp_path / "memory", tmp_path / "cpu"
    mounts = [["cgroup2", str(unified), "cgroup2", "rw"]]
    (unified / "job").mkdir(parents=True)
    v2 = ["hugetlb"] + ["memory"] * v2_memory + ["cpu"] * v2_cpu
    (unified / "job/cgroup.controllers").write_text(" ".join(v2) + "\n")
    for wanted, root, name in ((v1_memory, v1, "memory"), (v1_cpu, v1_cpu_root, "cpu")):
        if wanted:
            mounts.append(["cgroup", str(root), "cgroup", f"rw,relatime,{name}"])
            (root / "job").mkdir(parents=True)
    monkeypatch.setattr(cgroups, "_mounts", lambda: mounts)
    monkeypatch.setattr(cgroups, "_own_paths", lambda: {"": "job", "memory": "job", "cpu": "job"})
    # The kernel makes the interface files when a cgroup is made; mkdir here does not.
    real_mkdir = Path.mkdir

    def mkdir(self: Path, *args: object, **kwargs: object) -> None:
        real_mkdir(self, *args, **kwargs)  # type: ignore[arg-type]
        if self.parent == unified / "job" and v2_memory:
            (self / "memory.max").write_text("max\n")
        if self.parent == unified / "job" and v2_cpu:
            (self / "cpu.max").write_text("max 100000\n")
        if self.parent == v1 / "job":
            (self / "memory.limit_in_bytes").write_text("9223372036854771712\n")
        if self.parent == v1_cpu_root / "job":
            (self / "cpu.cfs_quota_us").write_text("-1\n")

    monkeypatch.setattr(Path, "mkdir", mkdir)
    return tmp_path


def test_v2_memory_controller_holds_the_limit(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    root = fake_host(monkeypatch, tmp_path, v2_memory=True, v1_memory=True)
    made = cgroups.create(MACHINE, LIMIT)
    assert made == [root / "unified/job" / MACHINE]
    assert (made[0] / "memory.max").read_text() == str(LIMIT)


def test_hybrid_host_limits_memory_in_v1(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    root = fake_host(monkeypatch, tmp_path, v2_memory=False, v1_memory=True)
    made = cgroups.create(MACHINE, LIMIT)
    assert made == [root / "unified/job" / MACHINE, root / "memory/job" / MACHINE]
    assert (made[1] / "memory.limit_in_bytes").read_text() == str(LIMIT)
    assert cgroups.ours() == sorted(made)


def test_no_memory_controller_refuses_and_leaves_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    root = fake_host(monkeypatch, tmp_path, v2_memory=False, v1_memory=False)
    with pytest.raises(LocalCloudError, match="no cgroup memory controller"):
        cgroups.create(MACHINE, LIMIT)
    assert not (root / "unified/job" / MACHINE).exists()


def test_no_quota_asked_no_cpu_cgroup(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    root = fake_host(monkeypatch, tmp_path, v2_memory=False, v1_memory=True, v1_cpu=True)
    made = cgroups.create(MACHINE, LIMIT)
    assert not (root / "cpu/job" / MACHINE).exists(), "the rehearsal's instances share the host's CPUs"
    assert made == [root / "unified/job" / MACHINE, root / "memory/job" / MACHINE]


def test_a_quota_goes_to_cpu_max_under_v2(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    root = fake_host(monkeypatch, tmp_path, v2_memory=True, v1_memory=False, v2_cpu=True, v1_cpu=True)
    (made,) = cgroups.create(MACHINE, LIMIT, cpu_quota_percent=66)
    assert made == root / "unified/job" / MACHINE
    assert (made / "cpu.max").read_text() == "66000 100000"


def test_a_hybrid_host_holds_the_quota_in_a_v1_cpu_cgroup(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    root = fake_host(monkeypatch, tmp_path, v2_memory=False, v1_memory=True, v1_cpu=True)
    made = cgroups.create(MACHINE, LIMIT, cpu_quota_percent=150)
    assert made[-1] == root / "cpu/job" / MACHINE
    assert (made[-1] / "cpu.cfs_quota_us").read_text() == "150000"
    assert cgroups.ours() == sorted(made), "teardown and the reaper find the cpu cgroup too"


def test_a_quota_without_a_cpu_controller_refuses_and_leaves_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    root = fake_host(monkeypatch, tmp_path, v2_memory=True, v1_memory=False)
    # The fake's interface files are plain files, which rmdir would refuse: count the removals.
    removed: list[Path] = []
    monkeypatch.setattr(cgroups, "remove", removed.append)
    with pytest.raises(LocalCloudError, match=r"no cgroup cpu controller.*without --cpu-quota"):
        cgroups.create(MACHINE, LIMIT, cpu_quota_percent=50)
    assert removed == [root / "unified/job" / MACHINE]
