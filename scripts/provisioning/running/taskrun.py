"""`provision.py run-workload` (as layout.TASK_USER, through sudo): one Airflow workload, its
JSON on stdin, run by Airflow's own execute_workload in a fresh interpreter.

The services hand every workload here (airflow_local_settings.py): a task's process then
descends from neither the scheduler nor a Celery worker, so it shares none of their memory
and its environment is built from the instance's non-secret settings only (AIRFLOW_ENV, the
role's ROLE_ENV). What it needs it has: the task's own short-lived token in the workload, and
the execution API's address in airflow.cfg.
"""

import os

from ..shared import layout as L
from ..shared.envfile import read_env_file


def task_environment():
    env = {}
    for path in (L.AIRFLOW_ENV, L.ROLE_ENV):
        if os.path.exists(path):
            env.update(read_env_file(path))
    env.update(HOME=L.TASK_HOME, USER=L.TASK_USER, LOGNAME=L.TASK_USER)
    # Its own copy of a cluster's S3 DAG bundle: the services' copy is theirs to parse.
    env["AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_STORAGE_PATH"] = L.TASK_HOME + "/dag-bundles"
    return env


def main():
    # Group-writable: the log files the task's supervisor writes stay the services' to prune.
    os.umask(0o002)
    python = L.VENV + "/bin/python"
    argv = [python, "-m", "airflow.sdk.execution_time.execute_workload", "--json-path", "/dev/stdin"]
    os.execve(python, argv, task_environment())
