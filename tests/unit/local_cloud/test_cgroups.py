"""cgroups.py: every instance gets its memory limit, on any cgroup layout, or none starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_ami.clouds.local import cgroups
from airflow_ami.clouds.local.system import LocalCloudError

MACHINE = "aa-i-0123"
LIMIT = 8 << 30


def fake_host(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *, v2_memory: bool, v1_memory: bool) -> Path:
    unified, v1 = tmp_path / "unified", tmp_path / "memory"
    mounts = [["cgroup2", str(unified), "cgroup2", "rw"]]
    (unified / "job").mkdir(parents=True)
    (unified / "job/cgroup.controllers").write_text("hugetlb memory\n" if v2_memory else "hugetlb\n")
    if v1_memory:
        mounts.append(["cgroup", str(v1), "cgroup", "rw,relatime,memory"])
        (v1 / "job").mkdir(parents=True)
    monkeypatch.setattr(cgroups, "_mounts", lambda: mounts)
    monkeypatch.setattr(cgroups, "_own_paths", lambda: {"": "job", "memory": "job"})
    # The kernel makes the interface files when a cgroup is made; mkdir here does not.
    real_mkdir = Path.mkdir

    def mkdir(self: Path, *args: object, **kwargs: object) -> None:
        real_mkdir(self, *args, **kwargs)  # type: ignore[arg-type]
        if self.parent == unified / "job" and v2_memory:
            (self / "memory.max").write_text("max\n")
        if self.parent == v1 / "job":
            (self / "memory.limit_in_bytes").write_text("9223372036854771712\n")

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
