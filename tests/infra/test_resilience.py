"""Resilience (slow): services come back from SIGKILL, runs survive, reboots are clean.

Deselect with `-m 'not slow'`. These run last (see conftest.py).
"""

from __future__ import annotations

import time

import pytest

from airflow_ami.driver.instance import (
    AIRFLOW_UNITS,
    FANOUT_DAG,
    FIRSTBOOT_MARKER,
    FIRSTBOOT_UNIT,
    INFLIGHT_DAG,
    MEMORY_DAG,
    Instance,
    expect,
    journal,
)

KILL_TARGETS = ("airflow-scheduler", "airflow-api-server", "airflow-dag-processor", "mysql")


def unit_name(instance: Instance, service: str) -> str:
    return instance.mysql_unit if service == "mysql" else f"{service}.service"


def main_pid(instance: Instance, unit: str) -> int:
    return int(instance.unit_props(unit, "MainPID").get("MainPID") or 0)


def sigkill_and_wait_restart(instance: Instance, unit: str, deadline: float) -> int:
    """SIGKILL the unit's main process; wait for a new one. Returns the old pid."""
    pid = main_pid(instance, unit)
    assert pid > 0, expect(f"{unit} running with a main PID", f"MainPID={pid}", journal(unit))
    instance.check(f"kill -KILL {pid}")
    props: dict[str, str] = {}
    while time.monotonic() < deadline:
        time.sleep(2)
        props = instance.unit_props(unit, "MainPID", "ActiveState", "SubState", "NRestarts")
        new = int(props.get("MainPID") or 0)
        if props.get("ActiveState") == "active" and new not in (0, pid):
            return pid
    raise AssertionError(
        expect(
            f"systemd to restart {unit} after SIGKILL of pid {pid} (Restart=always)",
            f"{props} at the deadline",
            f"systemctl status {unit}; {journal(unit)}; systemctl cat {unit}",
        )
    )


def start_inflight_run(instance: Instance) -> tuple[str, list[str]]:
    """Trigger the in-flight DAG and wait until one of its tasks runs: (run id, running tasks)."""
    run_id = instance.trigger(INFLIGHT_DAG)
    tis_path = f"/api/v2/dags/{INFLIGHT_DAG}/dagRuns/{run_id}/taskInstances"
    deadline = time.monotonic() + 300
    running: list[str] = []
    body: object = None
    while time.monotonic() < deadline and not running:
        time.sleep(2)
        status, body = instance.api("GET", tis_path)
        tis = (body or {}).get("task_instances", []) if status == 200 else []
        running = [t["task_id"] for t in tis if t.get("state") == "running"]
    assert running, expect(
        f"a task of {INFLIGHT_DAG} run {run_id} running within 300 s",
        str(body)[:500],
        journal("airflow-scheduler.service", 100),
    )
    return run_id, running


def wait_units_active(instance: Instance, deadline: float) -> dict[str, str]:
    units = (instance.mysql_unit, *AIRFLOW_UNITS)
    states: dict[str, str] = {}
    while True:
        states = {u: instance.unit_props(u, "ActiveState")["ActiveState"] for u in units}
        if all(s == "active" for s in states.values()) or time.monotonic() > deadline:
            return states
        time.sleep(3)


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("service", KILL_TARGETS)
def test_sigkill_recovers(instance: Instance, service: str) -> None:
    unit = unit_name(instance, service)
    bound = instance.recovery_timeout
    state = instance.wait_healthy(bound)
    assert state["healthy"], instance.health_message(state, f"healthy before killing {unit}")
    start = time.monotonic()
    pid = sigkill_and_wait_restart(instance, unit, start + bound)
    state = instance.wait_healthy(max(1.0, start + bound - time.monotonic()))
    assert state["healthy"], instance.health_message(
        state, f"healthy within {bound:.0f} s of SIGKILL to {unit} (pid {pid})"
    )
    states = wait_units_active(instance, start + bound)
    down = {u: s for u, s in states.items() if s != "active"}
    assert not down, expect(
        f"every service active within {bound:.0f} s of SIGKILL to {unit}",
        down,
        "; ".join(journal(u) for u in down),
    )


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_run_in_flight_survives_scheduler_kill(instance: Instance) -> None:
    unit = "airflow-scheduler.service"
    state = instance.wait_healthy(instance.recovery_timeout)
    assert state["healthy"], instance.health_message(state, "healthy before the run")
    with instance.quick_task_recovery():
        run_id, running = start_inflight_run(instance)
        sigkill_and_wait_restart(instance, unit, time.monotonic() + instance.recovery_timeout)
        # A task killed with its scheduler is failed by heartbeat timeout and retried.
        run = instance.wait_run(INFLIGHT_DAG, run_id, max(instance.run_timeout, 1500.0))
    assert run["state"] == "success", expect(
        f"{INFLIGHT_DAG} run {run_id} (in flight when {unit} got SIGKILL, task "
        f"{running} running) to complete successfully",
        instance.run_summary(run),
        f"{journal(unit, 200)}; [scheduler] task_instance_heartbeat_timeout",
    )


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_reboot_comes_back_healthy(instance: Instance) -> None:
    if instance.host.backend.get_connection_type() == "local":
        pytest.skip("local:// would reboot the machine running the suite; use ssh://")
    instance.ensure_dags()
    marker_cmd = f"stat -c %Y {FIRSTBOOT_MARKER} && sha256sum {FIRSTBOOT_MARKER}"
    marker_before = instance.check(marker_cmd)
    took = instance.reboot()
    start = time.monotonic()
    bound = instance.recovery_timeout + 120
    state = instance.wait_healthy(bound)
    assert state["healthy"], instance.health_message(
        state, f"healthy within {bound:.0f} s of the instance answering after reboot"
    )
    states = wait_units_active(instance, start + bound)
    down = {u: s for u, s in states.items() if s != "active"}
    assert not down, expect("every service active after reboot", down, "; ".join(journal(u) for u in down))
    marker_after = instance.check(marker_cmd)
    assert marker_after == marker_before, expect(
        f"{FIRSTBOOT_MARKER} untouched by the reboot (first boot runs once)",
        f"before {marker_before.split()} after {marker_after.split()}",
        f"journalctl -b -u {FIRSTBOOT_UNIT} --no-pager",
    )
    info = instance.probe("firstboot-journal")
    this_boot = info["firstboot_boots"].get(info["current_boot"], "no output")
    assert this_boot in ("skipped", "no output"), expect(
        f"{FIRSTBOOT_UNIT} skipped on the reboot (first boot runs once)",
        f"in this boot it {this_boot}",
        f"journalctl -b -u {FIRSTBOOT_UNIT} --no-pager",
    )
    run_id = instance.trigger(FANOUT_DAG, {"n": 2, "seconds": 2})
    run = instance.wait_run(FANOUT_DAG, run_id)
    assert run["state"] == "success", expect(
        f"a new {FANOUT_DAG} run to succeed after the reboot (back after {took:.0f} s)",
        instance.run_summary(run),
        journal("airflow-scheduler.service", 100),
    )


# fault -> seconds until Airflow was healthy again: printed at the end of the session.
RECOVERY: dict[str, float] = {}


def stopped_by_systemd(instance: Instance, since: str) -> dict[str, str]:
    """Airflow units that systemd stopped (a job of theirs, not their own exit) since `since`."""
    found = {}
    for unit in AIRFLOW_UNITS:
        lines = instance.sh(f"journalctl -u {unit} --since @{since} -o cat --no-pager").stdout.splitlines()
        stops = [line for line in lines if line.startswith("Stopping ")]
        if stops:
            found[unit] = stops[0]
    return found


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_mysql_restart_does_not_take_airflow_down_with_it(instance: Instance) -> None:
    """A package upgrade restarts MySQL: no Airflow unit is stopped with it; those that
    exit on the lost database are restarted by systemd; the API server stays up."""
    state = instance.wait_healthy(instance.recovery_timeout)
    assert state["healthy"], instance.health_message(state, "healthy before restarting MySQL")
    api_server = main_pid(instance, "airflow-api-server.service")
    since = instance.check("date +%s").strip()
    start = time.monotonic()
    instance.check(f"systemctl restart {instance.mysql_unit}")
    state = instance.wait_healthy(instance.recovery_timeout)
    RECOVERY[f"systemctl restart {instance.mysql_unit}"] = time.monotonic() - start
    assert state["healthy"], instance.health_message(
        state, "healthy again after `systemctl restart` of MySQL"
    )
    stopped = stopped_by_systemd(instance, since)
    assert not stopped, expect(
        f"no Airflow unit stopped with {instance.mysql_unit} (no Requires= on it)",
        stopped,
        "systemctl cat airflow-scheduler.service ([Unit] Requires=/Wants=)",
    )
    assert main_pid(instance, "airflow-api-server.service") == api_server, expect(
        "the API server serving on through the MySQL restart",
        "it was restarted",
        journal("airflow-api-server"),
    )


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_mysql_stopped_for_30s_then_started_airflow_comes_back_alone(instance: Instance) -> None:
    state = instance.wait_healthy(instance.recovery_timeout)
    assert state["healthy"], instance.health_message(state, "healthy before stopping MySQL")
    since = instance.check("date +%s").strip()
    instance.check(f"systemctl stop {instance.mysql_unit}")
    time.sleep(30)
    mysql = instance.sh(f"systemctl is-active {instance.mysql_unit}").stdout.strip()
    assert mysql != "active", expect(
        f"{instance.mysql_unit} to stay stopped while Airflow's services restart (no Wants= on it)",
        mysql,
        "systemctl list-dependencies --reverse " + instance.mysql_unit,
    )
    assert not stopped_by_systemd(instance, since), "no Airflow unit stopped with MySQL"
    start = time.monotonic()
    instance.check(f"systemctl start {instance.mysql_unit}")
    state = instance.wait_healthy(instance.recovery_timeout)
    RECOVERY[f"{instance.mysql_unit} stopped 30 s, then started"] = time.monotonic() - start
    assert state["healthy"], instance.health_message(state, "healthy again, with no manual step")
    states = wait_units_active(instance, time.monotonic() + instance.recovery_timeout)
    down = {u: s for u, s in states.items() if s != "active"}
    assert not down, expect("every unit active again by itself", down, "; ".join(journal(u) for u in down))


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_run_in_flight_survives_a_mysql_restart(instance: Instance) -> None:
    state = instance.wait_healthy(instance.recovery_timeout)
    assert state["healthy"], instance.health_message(state, "healthy before the run")
    run_id, running = start_inflight_run(instance)
    instance.check(f"systemctl restart {instance.mysql_unit}")
    run = instance.wait_run(INFLIGHT_DAG, run_id, max(instance.run_timeout, 1500.0))
    assert run["state"] == "success", expect(
        f"{INFLIGHT_DAG} run {run_id} (task {running} running when MySQL restarted) to succeed",
        instance.run_summary(run),
        f"{journal('airflow-scheduler.service', 200)}; {journal(instance.mysql_unit)}",
    )


def mem_total_mb(instance: Instance) -> int:
    for line in instance.read_text("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise AssertionError(expect("MemTotal in /proc/meminfo", "none", "cat /proc/meminfo"))


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_task_past_its_memory_fails_alone(instance: Instance) -> None:
    """A task asks for more than the instance has: the kernel kills that task (the
    scheduler's MemoryMax, or the instance's memory), and nothing else goes."""
    state = instance.wait_healthy(instance.recovery_timeout)
    assert state["healthy"], instance.health_message(state, "healthy before the memory hog")
    units = (instance.mysql_unit, *AIRFLOW_UNITS)
    before = {unit: main_pid(instance, unit) for unit in units}
    wanted = mem_total_mb(instance) + 1024
    run_id = instance.trigger(MEMORY_DAG, {"mb": wanted})
    run = instance.wait_run(MEMORY_DAG, run_id)
    states = {t["task_id"]: t["state"] for t in run.get("task_instances") or []}
    assert states == {"hog": "failed", "after": "success"}, expect(
        f"hog (asking for {wanted} MB, more than MemTotal) killed and failed, `after` run",
        instance.run_summary(run),
        f"dmesg | grep -i oom; {journal('airflow-scheduler.service', 100)}",
    )
    after = {unit: main_pid(instance, unit) for unit in units}
    assert after == before, expect(
        "MySQL and every Airflow service still on the same main PID", after, "dmesg | grep -i oom"
    )
    state = instance.wait_healthy(instance.recovery_timeout)
    assert state["healthy"], instance.health_message(state, "healthy after the task was killed")
