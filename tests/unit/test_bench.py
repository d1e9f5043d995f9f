"""The bench's arithmetic and the instance-side scripts it runs, on this machine."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from airflow_ami import bench
from airflow_ami.builddir import MissingRecord
from airflow_ami.driver import probe
from airflow_ami.settings import BakeSettings, LaunchSettings, load


def ti(task_id: str, start: str, end: str, state: str = "success") -> dict[str, Any]:
    return {"task_id": task_id, "start_date": start, "end_date": end, "state": state}


def test_bake_steps_come_from_the_provisioning_lines_and_repeated_steps_add_up() -> None:
    lines = [
        "[00:12]     amazon-ebs.airflow: ==> install_airflow",
        "[00:58]     amazon-ebs.airflow: <== install_airflow (45.2 s): changed",
        "[01:01]     amazon-ebs.airflow: <== validate_image (1.5 s): ok",
        "[01:02]     amazon-ebs.airflow: <== validate_image (0.5 s): ok",
        "[01:03] packer build exited with status 0",
    ]
    assert bench.bake_steps(lines) == {"install_airflow": 45.2, "validate_image": 2.0}


def test_span_counts_only_the_named_task_s_successes() -> None:
    tis = [
        ti("plan", "2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z"),
        ti("sleeper", "2026-01-01T00:00:02Z", "2026-01-01T00:00:12Z"),
        ti("sleeper", "2026-01-01T00:00:03.5Z", "2026-01-01T00:00:14.5+00:00"),
        ti("sleeper", "2026-01-01T00:00:02Z", "2026-01-01T00:00:40Z", state="failed"),
    ]
    assert bench.task_span(tis, "sleeper") == (2, 12.5)
    assert bench.task_span(tis, "absent") == (0, 0.0)


def test_the_overhead_splits_into_start_spread_and_time_beyond_s() -> None:
    tis = [
        ti("sleeper", "2026-01-01T00:00:02Z", "2026-01-01T00:00:13Z"),
        ti("sleeper", "2026-01-01T00:00:04Z", "2026-01-01T00:00:15Z"),
    ]
    assert bench.where_the_time_goes(tis, "sleeper", 10) == {
        "fanout_start_spread_s": 2.0,
        "fanout_task_overhead_s": 1.0,
    }


def test_fanout_figures_are_s_over_span_and_serial_over_parallel() -> None:
    figures = bench.fanout_figures(parallel=12.5, serial=85.0, seconds=10)
    assert figures["efficiency"] == 0.8 and figures["speedup"] == 6.8
    assert bench.fanout_figures(parallel=0, serial=1, seconds=10)["efficiency"] == 0.0


def test_throughput_and_latency_from_airflow_s_own_times() -> None:
    assert bench.tasks_per_min(200, 30.0) == 400.0
    run = {"queued_at": "2026-01-01T00:00:00Z"}
    tis = [ti("plan", "2026-01-01T00:00:01.25Z", "x"), ti("sleeper", "2026-01-01T00:00:03Z", "y")]
    assert bench.trigger_to_first_task(run, tis) == 1.25


def write(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)


def test_image_added_counts_regular_files_once_and_names_the_largest_paths(tmp_path: Path) -> None:
    base, image = tmp_path / "base", tmp_path / "image"
    write(base / "usr/lib/libc.so", 1000)
    write(image / "usr/lib/libc.so", 1000)
    write(image / "opt/airflow/venv/lib/big.so", 3 * bench.MB)
    os.link(image / "opt/airflow/venv/lib/big.so", image / "opt/airflow/venv/lib/again.so")
    write(image / "var/lib/mysql/ibdata1", bench.MB)
    (image / "var/lib/link").symlink_to(image / "opt")
    added = bench.image_added(bench.tree_sizes(base), bench.tree_sizes(image), top=2)
    assert added["image_added_mb"] == 4.0
    assert added["image_contributors_mb"] == {"/opt/airflow/venv": 3.0, "/var/lib/mysql": 1.0}


def test_the_table_shows_each_figure_beside_its_baseline_and_ratio() -> None:
    text = bench.table(
        {
            "install_uv_s": 40.0,
            "install_pip_s": 160.0,
            "install_ratio": 4.0,
            "tiny_tasks_per_min": 500.0,
            "quota_tiny_tasks_per_min": 300.0,
            "cluster_tiny_tasks_per_min": 450.0,
            "cluster_speedup": 1.5,
            "boot_phases": {"first_boot_done": 1.2, "healthy": 9.5},
            "image_contributors_mb": {"/opt/airflow/venv": 450.0},
        }
    )
    rows = {line.split()[0]: line.split() for line in text.splitlines()}
    assert rows["install_uv_s"][1:4] == ["40.0", "160.0", "4.0"]
    assert rows["cluster_tiny_tasks_per_min"][1:4] == ["450.0", "300.0", "1.5"]
    assert rows["/opt/airflow/venv"][1] == "450.0"
    assert "9.5" in next(line for line in text.splitlines() if "boot: healthy" in line)
    assert "boot_healthy_s" not in rows
    only_baseline = bench.table({"boot_migrate_s": 20.0}).splitlines()[1].split()
    assert only_baseline[:3] == ["boot_healthy_s", "-", "20.0"]


def test_the_pin_listing_leaves_out_what_was_built_from_source(tmp_path: Path) -> None:
    wheels = {"Fakebuilt": "cp311-cp311-linux_x86_64", "Fakewheel": "py3-none-manylinux_2_17_x86_64"}
    for name, tag in wheels.items():
        info = tmp_path / f"{name.lower()}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        (info / "WHEEL").write_text(f"Wheel-Version: 1.0\nTag: {tag}\n")
    out = subprocess.run(
        [sys.executable, "-c", bench.PINS_SCRIPT, bench.LOCAL_BUILD_TAG_RE.pattern],
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = json.loads(out)
    assert "Fakebuilt==1.0" in found["built"] and "Fakebuilt==1.0" not in found["pins"]
    assert "Fakewheel==1.0" in found["pins"]


class LocalNode:
    """An instance whose commands run on this machine."""

    def check(self, cmd: str, look: str = "") -> str:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, check=True).stdout


def test_boot_start_is_when_pid_1_started() -> None:
    started = bench.boot_started_at(LocalNode())
    with open("/proc/stat") as fh:
        btime = next(int(line.split()[1]) for line in fh if line.startswith("btime"))
    assert btime <= started <= time.time()


def test_the_scaling_quota_gives_a_controller_and_its_workers_the_host_s_cpus(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert bench.cpu_quota_for(bench.FULL) == 66  # 3 instances x 66% <= 200%
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert bench.cpu_quota_for(bench.FULL) == 266
    conditions = bench.conditions({"tiny_tasks_per_min": 1, "cluster_speedup": 2}, 266)
    assert conditions["tiny_tasks_per_min"]["cpu_quota_percent"] == 0
    assert conditions["cluster_speedup"] == {
        "cpu_quota_percent": 266,
        "instance_type": "t3.large",
        "host_cpus": 8,
    }


class BootedNode:
    """An instance whose PID 1 started at wall-clock 1000.0 and whose units report phases."""

    mysql_unit = "mysql.service"

    def probe(self, command: str, *units: str) -> dict[str, Any]:
        assert command == "boot-phases"
        return {
            "pid1_wall": 1000.0,
            "units": {u: {"started": 1.5, "active": 2.0, "exited": 3.25} for u in units},
        }


def test_boot_phases_are_seconds_after_pid_1_in_the_order_they_happened() -> None:
    phases = bench.boot_phases(BootedNode(), {"scheduler": 1009.0, "metadatabase": 1004.5, "healthy": 1009.5})
    assert phases["first_boot_started"] == 1.5 and phases["first_boot_done"] == 3.25
    assert phases["mysql_active"] == 2.0 and phases["airflow-scheduler_started"] == 1.5
    healthy = [k for k in phases if k.endswith("healthy")]
    assert healthy == ["metadatabase_healthy", "scheduler_healthy", "healthy"]
    assert phases["healthy"] == 9.5


def test_the_probe_reads_unit_phases_after_pid_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    uptime = time.clock_gettime(time.CLOCK_BOOTTIME)
    (tmp_path / "systemctl").write_text(
        "#!/bin/sh\n"
        f"echo ExecMainStartTimestampMonotonic={int((uptime - 1) * 1e6)}\n"
        "echo ActiveEnterTimestampMonotonic=0\n"
        f"echo ExecMainExitTimestampMonotonic={int(uptime * 1e6)}\n"
    )
    (tmp_path / "systemctl").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    probe.cmd_boot_phases(["x.service"])
    found = json.loads(out.getvalue())
    # This machine's PID 1 started between its boot and now (and before the "unit" started).
    assert time.time() - uptime - 1 <= found["pid1_wall"] <= time.time()
    phases = found["units"]["x.service"]
    assert phases["active"] == 0, "not reached"
    assert 0 < phases["started"] < phases["exited"] and phases["exited"] - phases["started"] == pytest.approx(
        1, abs=0.02
    )


def test_the_tee_passes_output_through_and_keeps_its_lines() -> None:
    out = io.StringIO()
    tee = bench.Tee(out)
    tee.write("a\nb")
    tee.write("\nc\n")
    assert out.getvalue() == "a\nb\nc\n"
    assert tee.lines == ["a", "b", "c"]


@pytest.mark.parametrize("plan", [bench.FULL, bench.QUICK])
def test_plans_keep_the_issue_s_fanout_of_eight(plan: bench.Plan) -> None:
    assert plan.fanout_tasks == 8 and plan.tiny_tasks <= bench.FULL.tiny_tasks == 200


def test_a_run_that_measured_nothing_keeps_the_last_bench_json(
    build_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    last = build_root / "bench.json"
    last.parent.mkdir(parents=True)
    last.write_text('{"tiny_tasks_per_min": 365.0}\n')
    monkeypatch.setattr(bench, "BENCH_JSON", last)
    with pytest.raises(MissingRecord, match="nothing launched"):
        local = {"cloud": "local"}
        bench.bench(
            load(BakeSettings, cli=local),
            load(LaunchSettings, cli=local),
            quick=True,
            on_launched=True,
            out=io.StringIO(),
        )
    assert last.read_text() == '{"tiny_tasks_per_min": 365.0}\n'


def test_api_calls_are_the_execution_api_s_requests_in_the_access_log_since_then(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    logged = [
        'INFO 10.213.0.2 "PUT /execution/task-instances/0195/run HTTP/1.1" 200',
        'INFO 10.213.0.2 "GET /api/v2/monitor/health HTTP/1.1" 200',
        'INFO 10.213.0.2 "PATCH /execution/task-instances/0195/state HTTP/1.1" 204',
    ]
    (tmp_path / "journalctl").write_text(
        '#!/bin/sh\necho "$*" > '
        + str(tmp_path / "args")
        + "\n"
        + "".join(f"echo '{json.dumps({'MESSAGE': m})}'\n" for m in logged)
    )
    (tmp_path / "journalctl").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    probe.cmd_api_calls(["1796270000.7"])
    assert json.loads(out.getvalue()) == {"execution_api_calls": 2, "lines": 3}
    args = (tmp_path / "args").read_text().split()
    assert args[args.index("-u") + 1] == probe.layout.API_SERVER_UNIT and "@1796270000" in args


def test_cpu_per_task_is_what_each_unit_used_between_the_samples_over_the_tasks() -> None:
    before = {"airflow-scheduler.service": 10.0, "airflow-workloads.slice": 0.0}
    after = {"airflow-scheduler.service": 30.0, "airflow-workloads.slice": 100.0}
    assert bench.cpu_per_task(before, after, 200) == {
        "airflow-scheduler.service": 0.1,
        "airflow-workloads.slice": 0.5,
    }
    assert bench.cpu_per_task(before, after, 0) == {}


def test_a_unit_s_cpu_seconds_come_from_its_cgroup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "system.slice/x.service").mkdir(parents=True)
    (tmp_path / "system.slice/x.service/cpu.stat").write_text("usage_usec 2500000\nuser_usec 2000000\n")
    (tmp_path / "systemctl").write_text('#!/bin/sh\n[ "$4" = x.service ] && echo /system.slice/x.service\n')
    (tmp_path / "cpu.stat").write_text("usage_usec 90000000\n")  # the root's: every unit's
    (tmp_path / "systemctl").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.setattr(probe, "CGROUP_ROOT", str(tmp_path))
    assert probe.cgroup_cpu_seconds("x.service") == 2.5
    assert probe.cgroup_cpu_seconds("gone.service") == 0.0, "not running: nothing used"
