"""Uploaded by the airflow-ami testinfra suite; removed when the suite ends.

A short chain of sleeping tasks, kept in flight while the resilience test
SIGKILLs the scheduler. Retries let a task killed with its scheduler run again.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta

from airflow.sdk import dag, task


@dag(
    dag_id="airflow_ami_testinfra_inflight",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    default_args={"retries": 3, "retry_delay": timedelta(seconds=5)},
    tags=["airflow-ami-testinfra"],
)
def airflow_ami_testinfra_inflight() -> None:
    @task
    def step(seconds: int) -> int:
        time.sleep(seconds)
        return seconds

    first = step.override(task_id="step_1")(20)
    second = step.override(task_id="step_2")(20)
    third = step.override(task_id="step_3")(5)
    first >> second >> third


airflow_ami_testinfra_inflight()
