"""The untrusted author's task (airflow_ami/driver/dags/airflow_ami_testinfra_untrusted.py):
run it, collect what it read, and check that no secret of the instance (or the cluster's
nodes) is in it."""

from __future__ import annotations

import ast
import json
from typing import Any

from airflow_ami.driver.instance import UNTRUSTED_DAG, Instance, expect, journal
from airflow_ami.seam import layout


def untrusted_task_reached(instance: Instance, nodes: list[Instance]) -> dict[str, Any]:
    """A run of the untrusted DAG, triggered through `instance`: what its task could read
    ({"user", "environment", "processes", "files", "attempts"}), and under "leaked" the
    names of the secrets of any of `nodes` found in it."""
    dag_id = UNTRUSTED_DAG
    run_id = instance.trigger(dag_id)
    run = instance.wait_run(dag_id, run_id)
    assert run["state"] == "success", expect(
        f"{dag_id} run success", instance.run_summary(run), journal("airflow-scheduler.service", 100)
    )
    status, body = instance.api(
        "GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/reach/xcomEntries/return_value"
    )
    value = (body or {}).get("value") if status == 200 else None
    reached = ast.literal_eval(value) if isinstance(value, str) else value
    assert isinstance(reached, dict), expect("the task's findings as its XCom", f"HTTP {status}: {body}", "")
    where = "/run/airflow-ami-untrusted.json"
    leaked: set[str] = set()
    for node in nodes:
        node.write_file(where, json.dumps(reached).encode(), mode="0600")
        try:
            leaked.update(node.probe("scan", where)["keys"])
        finally:
            node.sh(f"rm -f {where}")
    reached["leaked"] = sorted(leaked)
    return reached


def assert_reaches_no_secret(reached: dict[str, Any]) -> None:
    assert reached["user"] == layout.TASK_USER, expect(
        f"the task running as {layout.TASK_USER}",
        reached["user"],
        f"{layout.AIRFLOW_HOME}/config/airflow_local_settings.py; the sudoers rule in /etc/sudoers.d",
    )
    assert reached["leaked"] == [], expect(
        "no secret of the instance in anything the task could read",
        f"{reached['leaked']} reached, through: environment {sorted(reached['environment'])[:40]},"
        f" processes {sorted(reached['processes'])[:20]}, files {sorted(reached['files'])}",
        "the task's environment and what it can read as its user",
    )
    succeeded = [name for name, attempt in reached["attempts"].items() if attempt["rc"] == 0]
    assert succeeded == [], expect(
        "every attempt refused: the backup and database accounts, sudo, the broker without password",
        {name: reached["attempts"][name] for name in succeeded},
        "MySQL's socket accounts; /etc/sudoers.d/airflow-ami; Redis's requirepass and ACL",
    )
