"""Services: MySQL and every Airflow unit enabled and running; first boot ran once."""

from __future__ import annotations

import configparser
import json
from typing import Any

import pytest

from airflow_ami.driver.instance import (
    AIRFLOW_TARGET,
    AIRFLOW_UNITS,
    FIRSTBOOT_MARKER,
    FIRSTBOOT_UNIT,
    Instance,
    expect,
    journal,
    layout,
)

# Logical names, so that `-k scheduler` selects the scheduler's checks.
SERVICES = ("mysql", *(u.removesuffix(".service") for u in AIRFLOW_UNITS))


def unit_name(instance: Instance, service: str) -> str:
    return instance.mysql_unit if service == "mysql" else f"{service}.service"


@pytest.mark.parametrize("service", SERVICES)
def test_service_enabled(instance: Instance, service: str) -> None:
    unit = unit_name(instance, service)
    state = instance.is_enabled(unit)
    assert state == "enabled", expect(
        f"{unit} enabled (starts at boot)",
        f"systemctl is-enabled {unit} -> {state}",
        f"systemctl status {unit}; systemctl cat {unit} ([Install] section)",
    )


@pytest.mark.parametrize("service", SERVICES)
def test_service_running(instance: Instance, service: str) -> None:
    unit = unit_name(instance, service)
    props = instance.unit_props(unit, "ActiveState", "SubState", "MainPID", "NRestarts")
    assert (props.get("ActiveState"), props.get("SubState")) == ("active", "running"), expect(
        f"{unit} active (running)",
        f"ActiveState={props.get('ActiveState')} SubState={props.get('SubState')}",
        f"systemctl status {unit}; {journal(unit)}",
    )


@pytest.mark.parametrize("service", SERVICES)
def test_service_restarts_on_crash(instance: Instance, service: str) -> None:
    unit = unit_name(instance, service)
    restart = instance.unit_props(unit, "Restart").get("Restart")
    allowed = {"always"} if service != "mysql" else {"always", "on-failure", "on-abnormal"}
    assert restart in allowed, expect(
        f"{unit} Restart= one of {sorted(allowed)}",
        f"Restart={restart}",
        f"systemctl cat {unit}",
    )


def test_airflow_target_active(instance: Instance) -> None:
    props = instance.unit_props(AIRFLOW_TARGET, "ActiveState", "LoadState")
    assert props.get("ActiveState") == "active", expect(
        f"{AIRFLOW_TARGET} active",
        f"LoadState={props.get('LoadState')} ActiveState={props.get('ActiveState')}",
        f"systemctl status {AIRFLOW_TARGET}; systemctl list-dependencies {AIRFLOW_TARGET}",
    )
    state = instance.is_enabled(AIRFLOW_TARGET)
    assert state == "enabled", expect(
        f"{AIRFLOW_TARGET} enabled (reached at boot)",
        f"systemctl is-enabled {AIRFLOW_TARGET} -> {state}",
        f"systemctl cat {AIRFLOW_TARGET}",
    )


def test_airflow_target_wants_every_airflow_unit(instance: Instance) -> None:
    deps = instance.check(f"systemctl list-dependencies --plain --no-pager {AIRFLOW_TARGET}")
    listed = {line.strip().lstrip("●○*").strip() for line in deps.splitlines()}
    missing = [u for u in AIRFLOW_UNITS if u not in listed]
    assert not missing, expect(
        f"{AIRFLOW_TARGET} to pull in {', '.join(AIRFLOW_UNITS)}",
        f"missing {missing}",
        f"systemctl list-dependencies {AIRFLOW_TARGET}; systemctl cat {AIRFLOW_TARGET}",
    )


def test_firstboot_done(instance: Instance) -> None:
    res = instance.sh(f"cat {FIRSTBOOT_MARKER}")
    assert res.rc == 0, expect(
        f"first-boot marker {FIRSTBOOT_MARKER}",
        f"missing ({res.stderr.strip()})",
        f"{journal(FIRSTBOOT_UNIT, 100)}; systemctl status {FIRSTBOOT_UNIT}",
    )
    record: dict[str, Any] = json.loads(res.stdout)
    keys = " ".join(record).lower()
    missing = [k for k in ("instance", "region", "imds") if k not in keys]
    assert not missing, expect(
        f"{FIRSTBOOT_MARKER} to record instance id, region, IMDS version and time",
        f"keys {sorted(record)} (nothing about {missing})",
        f"cat {FIRSTBOOT_MARKER}",
    )
    result = instance.unit_props(FIRSTBOOT_UNIT, "Result", "LoadState")
    assert result.get("Result") == "success", expect(
        f"{FIRSTBOOT_UNIT} Result=success",
        f"{result}",
        journal(FIRSTBOOT_UNIT, 100),
    )


def test_firstboot_ran_exactly_once(instance: Instance) -> None:
    info = instance.probe("firstboot-journal")
    boots: dict[str, str] = info["firstboot_boots"]
    ran = sorted(b for b, how in boots.items() if how == "ran")
    unclear = {b: how for b, how in boots.items() if how.startswith("unclear")}
    look = (
        f"journalctl -u {FIRSTBOOT_UNIT} --no-pager -o short-iso (across boots: "
        f"journalctl --list-boots); cat {FIRSTBOOT_MARKER}"
    )
    assert len(ran) <= 1 and not unclear, expect(
        f"{FIRSTBOOT_UNIT} doing its work in one boot and reporting 'already done' in the others",
        f"work done in {len(ran)} boots {ran}; unclear boots {unclear}",
        look,
    )
    covers_first_boot = (
        info.get("oldest_entry") is not None
        and info.get("marker_mtime") is not None
        and info["oldest_entry"] <= info["marker_mtime"]
    )
    if covers_first_boot:
        assert len(ran) == 1, expect(
            f"the journal (which reaches back before {FIRSTBOOT_MARKER} was written) to "
            f"show {FIRSTBOOT_UNIT} doing its work once",
            f"boots seen: {boots}",
            look,
        )


@pytest.mark.parametrize("timer", layout.TIMERS)
def test_housekeeping_timer_enabled_and_waiting(instance: Instance, timer: str) -> None:
    state = instance.is_enabled(timer)
    props = instance.unit_props(timer, "ActiveState")
    assert state == "enabled" and props.get("ActiveState") == "active", expect(
        f"{timer} enabled and active (it keeps the disk bounded)",
        f"is-enabled {state}, ActiveState={props.get('ActiveState')}",
        f"systemctl list-timers; systemctl status {timer}",
    )


def test_log_prune_removes_logs_past_the_retention(instance: Instance, settings: dict[str, Any]) -> None:
    days = int(settings["log_retention_days"])
    old = f"{layout.AIRFLOW_LOGS}/airflow_ami_testinfra_prune/old.log"
    new = f"{layout.AIRFLOW_LOGS}/airflow_ami_testinfra_prune/new.log"
    instance.check(
        f"install -d -o airflow -g airflow {layout.AIRFLOW_LOGS}/airflow_ami_testinfra_prune"
        f" && install -o airflow -g airflow /dev/null {old} && install -o airflow -g airflow /dev/null {new}"
        f" && touch -d '{days + 5} days ago' {old}"
    )
    unit = "airflow-log-prune.service"
    res = instance.sh(f"systemctl start {unit}")
    left = instance.sh(f"ls {old} {new} 2>/dev/null").stdout.split()
    instance.sh(f"rm -rf {layout.AIRFLOW_LOGS}/airflow_ami_testinfra_prune")
    assert res.rc == 0 and left == [new], expect(
        f"{unit} to delete a log {days + 5} days old and keep a new one (log_retention_days={days})",
        f"start exit {res.rc} {res.stderr.strip()[-300:]}; left {left}",
        journal(unit),
    )


def test_db_clean_runs(instance: Instance) -> None:
    unit = "airflow-db-clean.service"
    res = instance.sh(f"systemctl start {unit}")
    result = instance.unit_props(unit, "Result").get("Result")
    assert res.rc == 0 and result == "success", expect(
        f"{unit} to run `airflow db clean` successfully",
        f"start exit {res.rc}, Result={result}",
        journal(unit),
    )


def test_the_metrics_shipper_runs_where_airflow_sends_its_statsd(
    instance: Instance, settings: dict[str, Any]
) -> None:
    unit = layout.METRICS_UNIT
    props = instance.unit_props(unit, "ActiveState", "SubState")
    state = (props.get("ActiveState"), props.get("SubState"))
    if not settings["cloudwatch_metrics"]:
        assert state != ("active", "running"), expect(f"{unit} idle (cloudwatch_metrics false)", state, unit)
        return
    # From the file the services read: the CLI wrapper turns StatsD off for its own runs.
    config = configparser.ConfigParser(interpolation=None)
    config.read_string(instance.read_text(layout.AIRFLOW_CFG))
    sent_to = {key: config.get("metrics", key, fallback="") for key in ("statsd_on", "statsd_port")}
    assert state == ("active", "running") and sent_to == {
        "statsd_on": "True",
        "statsd_port": str(layout.STATSD_PORT),
    }, expect(
        f"{unit} active (running), Airflow's StatsD aimed at its port {layout.STATSD_PORT}",
        f"{unit}: {state}; [metrics] {sent_to}",
        f"systemctl status {unit}; {journal(unit)}; [metrics] in {layout.AIRFLOW_CFG}",
    )
