"""DAG runs through the REST API: N-wide parallelism and an 8 MiB XCom."""

from __future__ import annotations

import ast
from datetime import UTC, datetime

import pytest

from airflow_ami.driver.instance import (
    AIRFLOW_CLI,
    AIRFLOW_ENV,
    FANOUT_DAG,
    OPERATORS_DAG,
    XCOM_DAG,
    Instance,
    common_instant,
    expect,
    journal,
    max_concurrency,
    parse_ts,
)

MAX_FANOUT = 8


def _fmt(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%H:%M:%S.%f")[:-3]


@pytest.mark.timeout(900)
def test_fanout_runs_in_parallel(instance: Instance) -> None:
    parallelism = instance.parallelism()
    # With parallelism 1 we still ask for 2 tasks: the run then shows serial execution.
    n = max(2, min(MAX_FANOUT, parallelism))
    seconds = instance.sleep_seconds
    run_id = instance.trigger(FANOUT_DAG, {"n": n, "seconds": seconds})
    run = instance.wait_run(FANOUT_DAG, run_id)
    where = (
        f"{journal('airflow-scheduler.service', 100)}; "
        f"{AIRFLOW_CLI} config get-value core parallelism ({AIRFLOW_ENV})"
    )
    assert run["state"] == "success", expect(
        f"{FANOUT_DAG} run {run_id} success", instance.run_summary(run), where
    )
    sleepers = [t for t in run["task_instances"] or [] if t["task_id"] == "sleeper"]
    assert len(sleepers) == n and all(t["state"] == "success" for t in sleepers), expect(
        f"{n} sleeper tasks, all success", instance.run_summary(run), where
    )
    intervals = [(parse_ts(t["start_date"]), parse_ts(t["end_date"])) for t in sleepers]
    width = max_concurrency(intervals)
    instant = common_instant(intervals)
    spans = ", ".join(f"{_fmt(s)}-{_fmt(e)}" for s, e in sorted(intervals))
    assert instant is not None, expect(
        f"all {n} tasks (sleep {seconds} s each, N=min({MAX_FANOUT}, parallelism={parallelism}))"
        " running at one common instant",
        f"at most {width} ran at once (parallelism {parallelism}); intervals {spans}",
        where,
    )


@pytest.mark.timeout(900)
def test_xcom_8mib_round_trip(instance: Instance) -> None:
    run_id = instance.trigger(XCOM_DAG)
    run = instance.wait_run(XCOM_DAG, run_id)
    where = (
        f"{journal('airflow-scheduler.service', 100)}; task log of {XCOM_DAG}/{run_id}; "
        'mysql -e "SELECT @@max_allowed_packet"'
    )
    assert run["state"] == "success", expect(
        f"{XCOM_DAG} run success (8 MiB XCom pushed and read back intact)",
        instance.run_summary(run),
        where,
    )
    status, body = instance.api(
        "GET",
        f"/api/v2/dags/{XCOM_DAG}/dagRuns/{run_id}/taskInstances/consume/xcomEntries/return_value",
    )
    value = (body or {}).get("value") if status == 200 else None
    if isinstance(value, str):  # some API versions return the stringified value
        value = ast.literal_eval(value)
    assert (
        isinstance(value, dict)
        and value.get("length") == value.get("expected_length") == 8 * 1024 * 1024
        and value.get("sha256") == value.get("expected_sha256")
    ), expect(
        "consume's result: length 8388608 and matching sha256",
        f"HTTP {status}: {str(value)[:300]}",
        where,
    )


@pytest.mark.timeout(900)
def test_standard_operators_work(instance: Instance) -> None:
    run_id = instance.trigger(OPERATORS_DAG)
    run = instance.wait_run(OPERATORS_DAG, run_id)
    states = {t["task_id"]: t["state"] for t in run["task_instances"] or []}
    want = {
        "bash": "success",
        "choose": "success",
        "in_virtualenv": "success",
        "not_chosen": "skipped",
        "in_external_python": "success",
        "sensor": "success",
    }
    assert run["state"] == "success" and states == want, expect(
        f"{OPERATORS_DAG} run success with task states {want}",
        instance.run_summary(run),
        f"the failed task's log under {instance.airflow_config('logging', 'base_log_folder')}; "
        f"{journal('airflow-scheduler.service', 100)}",
    )
