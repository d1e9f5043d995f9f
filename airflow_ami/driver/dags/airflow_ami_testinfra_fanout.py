"""Uploaded by the airflow-ami testinfra suite; removed when the suite ends.

Fan-out: ``dag_run.conf`` = {"n": N, "seconds": S} maps N tasks that each sleep
S seconds. With the LocalExecutor and parallelism >= N they all run at once.
"""

from __future__ import annotations

import time
from datetime import datetime

from airflow.sdk import dag, task


@dag(
    dag_id="airflow_ami_testinfra_fanout",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_tasks=64,
    tags=["airflow-ami-testinfra"],
)
def airflow_ami_testinfra_fanout() -> None:
    @task
    def plan(**context: object) -> list[int]:
        conf = getattr(context["dag_run"], "conf", None) or {}
        return [int(conf.get("seconds", 10))] * int(conf.get("n", 2))

    @task
    def sleeper(seconds: int) -> int:
        time.sleep(seconds)
        return seconds

    sleeper.expand(seconds=plan())


airflow_ami_testinfra_fanout()
