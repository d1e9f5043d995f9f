"""`provision.py run-workloads` (layout.WORKLOAD's service, as layout.TASK_USER): Airflow's
workloads, each JSON read from a connection a service made to layout.WORKLOAD_SOCKET, each
run by Airflow's own execute_workload in a process forked for it; its exit status is the
answer on that connection.

The services hand every workload here (airflow_local_settings.py): a task's process then
descends from neither the scheduler nor a Celery worker, so it shares none of their memory
and its environment is built from the instance's non-secret settings only (AIRFLOW_ENV, the
role's ROLE_ENV, read again for each workload: a worker's controller may have moved). What
it needs it has: the task's own short-lived token in the workload, and the execution API's
address in airflow.cfg (a worker's: in ROLE_ENV).

The server imports Airflow's task machinery once and forks for each workload, as the
LocalExecutor's own workers do: a fresh interpreter per task spent about 1.7 CPU-seconds
importing it again, which on 2 CPUs held tiny tasks to a tenth of what the scheduler gives.
"""

import os
import sys

from ..shared import layout as L
from ..shared.envfile import read_env_file

# systemd's first passed socket (LISTEN_FDS_START): the listening WORKLOAD_SOCKET.
LISTEN_FD = 3

# Run by the venv's Python (it imports Airflow), with CODE_DIR as its argument.
SERVER = r"""
import gc, os, signal, socket, sys, traceback
sys.path.insert(0, sys.argv[1])
from provisioning.running.taskrun import task_environment
from pydantic import TypeAdapter
from airflow.executors import workloads
from airflow.sdk.execution_time.execute_workload import execute_workload
import airflow.sdk.execution_time.supervisor, airflow.sdk.execution_time.task_runner
# The task runner imports the DAG bag when it parses the DAG file: about 0.18 CPU-s a task.
import airflow.dag_processing.dagbag

decoder = TypeAdapter(workloads.All)
# As the LocalExecutor does before it forks: the imported heap is never collected, so a
# workload's first collection neither walks it (0.15 CPU-s) nor copies its pages.
gc.freeze()


def run(conn):
    data = b"".join(iter(lambda: conn.recv(65536), b""))
    os.environ.clear()
    os.environ.update(task_environment())
    os.dup2(2, 1)  # the workload's output is the journal's; its answer goes on conn
    status = 1
    try:
        execute_workload(decoder.validate_json(data))
        status = 0
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    conn.sendall(b"%d\n" % status)


listener = socket.socket(fileno=int(sys.argv[2]))
signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the forked workloads
print("airflow-workload: ready, Airflow imported", flush=True)
while True:
    conn, _ = listener.accept()
    if os.fork() == 0:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # a workload waits for its own children
        listener.close()
        try:
            run(conn)
        finally:
            os._exit(0)
    conn.close()
"""


def task_environment():
    env = {}
    for path in (L.AIRFLOW_ENV, L.ROLE_ENV):
        if os.path.exists(path):
            env.update(read_env_file(path))
    env.update(HOME=L.TASK_HOME, USER=L.TASK_USER, LOGNAME=L.TASK_USER)
    # Its own copy of a cluster's S3 DAG bundle: the services' copy is theirs to parse.
    env["AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_STORAGE_PATH"] = L.TASK_HOME + "/dag-bundles"
    return env


def main(execve=os.execve):
    """Become the server: the venv's Python, the task environment, the listening socket kept."""
    # Group-writable: the log files a task's supervisor writes stay the services' to prune.
    os.umask(0o002)
    os.chdir(L.TASK_HOME)
    python = L.VENV + "/bin/python"
    sys.stdout.flush()
    execve(python, [python, "-c", SERVER, L.CODE_DIR, str(LISTEN_FD)], task_environment())
