"""Uploaded by the airflow-ami testinfra suite; removed when the suite ends.

`hog` allocates (and touches) memory in steps up to conf["mb"], more than the
instance has: the kernel must kill it, and only it. `after` runs whatever hog's
fate, to show the scheduler still schedules once the task is gone.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag, get_current_context, task

STEP_MB = 64


@dag(
    dag_id="airflow_ami_testinfra_memory",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    default_args={"retries": 0},
    tags=["airflow-ami-testinfra"],
)
def airflow_ami_testinfra_memory() -> None:
    @task
    def hog() -> int:
        wanted = int(get_current_context()["dag_run"].conf["mb"])
        held = []
        while len(held) * STEP_MB < wanted:
            held.append(bytearray(STEP_MB << 20))
        # Still alive: nothing stopped it short of the instance's memory.
        return len(held) * STEP_MB

    @task(trigger_rule="all_done")
    def after() -> str:
        return "scheduled"

    hog() >> after()


airflow_ami_testinfra_memory()
