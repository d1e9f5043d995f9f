"""Uploaded by the airflow-ami testinfra suite; removed when the suite ends.

Airflow's standard operators on the image: BashOperator, a branch, @task.virtualenv
(a fresh environment, made with the image's uv), @task.external_python (the Airflow
venv's own interpreter as an external one) and a sensor.
"""

from __future__ import annotations

import sys
from datetime import datetime

from airflow.providers.standard.operators.bash import BashOperator
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.sensors.python import PythonSensor
from airflow.sdk import dag, task


@dag(
    dag_id="airflow_ami_testinfra_operators",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    tags=["airflow-ami-testinfra"],
)
def airflow_ami_testinfra_operators() -> None:
    bash = BashOperator(task_id="bash", bash_command="echo operators on $(hostname)")

    @task.branch
    def choose() -> str:
        return "in_virtualenv"

    @task.virtualenv(task_id="in_virtualenv", requirements=[], system_site_packages=False)
    def in_virtualenv() -> str:
        import sys  # noqa: PLC0415  (the function runs alone in another interpreter)

        return sys.prefix

    @task.external_python(task_id="in_external_python", python=sys.executable)
    def in_external_python() -> str:
        import sys  # noqa: PLC0415  (the function runs alone in another interpreter)

        return sys.version

    not_chosen = EmptyOperator(task_id="not_chosen")
    sensor = PythonSensor(task_id="sensor", python_callable=lambda: True, poke_interval=1, timeout=120)
    chosen = in_virtualenv()
    bash >> choose() >> [chosen, not_chosen]
    chosen >> in_external_python() >> sensor


airflow_ami_testinfra_operators()
