"""A task written as an untrusted DAG author would write it, to take the platform's secrets.

It tries every way a task on the instance has: its own environment, every process's
environment and memory maps through /proc, every file where the image keeps secrets, the
database's socket accounts (the backup account authenticates by OS user), the broker with
no password, and sudo. It returns all it could read and how each attempt ended; the verify
suite (tests/infra/test_security.py) checks that no secret of the instance is in it.
"""

from __future__ import annotations

import glob
import os
import pwd
import subprocess
from datetime import datetime

from airflow.sdk import dag, task

SECRET_PLACES = (
    "/etc/airflow/*",
    "/etc/airflow/*/*",
    "/etc/airflow-ami/*",
    "/var/lib/airflow-ami/*",
    "/var/backups/airflow/*",
    "/opt/airflow/*",
    "/opt/airflow/config/*",
    "/root/*",
    "/root/.*",
)
ATTEMPTS = {
    "dump the database as the backup account": ["mysqldump", "-u", "airflow_backup", "--no-data", "airflow"],
    "query the database as airflow": ["mysql", "-u", "airflow", "-e", "SELECT password FROM airflow.ab_user"],
    "become root": ["sudo", "-n", "true"],
    "become airflow": ["sudo", "-n", "-u", "airflow", "true"],
    "read the broker unauthenticated": ["redis-cli", "-h", "127.0.0.1", "CONFIG", "GET", "requirepass"],
}


def _read(path: str, limit: int = 65536) -> str | None:
    try:
        with open(path, "rb") as handle:
            return handle.read(limit).decode("utf-8", "replace")
    except OSError:
        return None


@dag(
    dag_id="airflow_ami_testinfra_untrusted",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    tags=["airflow-ami-testinfra"],
)
def airflow_ami_testinfra_untrusted() -> None:
    @task
    def reach() -> dict[str, object]:
        processes = {}
        for environ in glob.glob("/proc/[0-9]*/environ"):
            text = _read(environ)
            if text:
                processes[environ] = text
        files = {}
        for pattern in SECRET_PLACES:
            for path in glob.glob(pattern):
                text = _read(path) if os.path.isfile(path) else None
                if text is not None:
                    files[path] = text
        attempts = {}
        for name, argv in ATTEMPTS.items():
            try:
                done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
                attempts[name] = {
                    "rc": done.returncode,
                    "out": done.stdout[-20000:],
                    "err": done.stderr[-2000:],
                }
            except (OSError, subprocess.TimeoutExpired) as exc:
                attempts[name] = {"rc": None, "out": "", "err": str(exc)}
        return {
            "user": pwd.getpwuid(os.geteuid()).pw_name,
            "environment": dict(os.environ),
            "processes": processes,
            "files": files,
            "attempts": attempts,
        }

    reach()


airflow_ami_testinfra_untrusted()
