"""Uploaded by `./bake upgrade` to the new instance, run once, then removed with its run.

Canary: one task that returns a value, so a run exercises the scheduler, the executor,
the execution API and an XCom on the instance end to end.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag, task


@dag(
    dag_id="airflow_ami_testinfra_canary",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    tags=["airflow-ami-testinfra"],
)
def airflow_ami_testinfra_canary() -> None:
    @task
    def answer() -> int:
        return 42

    answer()


airflow_ami_testinfra_canary()
