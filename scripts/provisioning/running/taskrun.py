"""`provision.py run-workload` (layout.WORKLOAD's unit, as layout.TASK_USER): one Airflow
workload, its JSON read from the connection a service made to layout.WORKLOAD_SOCKET, run by
Airflow's own execute_workload in a fresh interpreter; its exit status is the answer.

The services hand every workload here (airflow_local_settings.py): a task's process then
descends from neither the scheduler nor a Celery worker, so it shares none of their memory
and its environment is built from the instance's non-secret settings only (AIRFLOW_ENV, the
role's ROLE_ENV). What it needs it has: the task's own short-lived token in the workload, and
the execution API's address in airflow.cfg (a worker's: in ROLE_ENV).
"""

import os
import subprocess
import sys
import tempfile

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


def main(stdin=None, stdout=None):
    stdin = stdin or sys.stdin.buffer
    stdout = stdout or sys.stdout.buffer
    workload = stdin.read()
    # Group-writable: the log files the task's supervisor writes stay the services' to prune.
    os.umask(0o002)
    with tempfile.NamedTemporaryFile(prefix="workload-", suffix=".json") as handle:
        handle.write(workload)
        handle.flush()
        python = L.VENV + "/bin/python"
        argv = [python, "-m", "airflow.sdk.execution_time.execute_workload", "--json-path", handle.name]
        # Its output is the journal's (this unit's standard error), not the answer.
        status = subprocess.call(
            argv, env=task_environment(), stdin=subprocess.DEVNULL, stdout=sys.stderr, cwd=L.TASK_HOME
        )
    stdout.write(b"%d\n" % status)
    stdout.flush()
    return 0
