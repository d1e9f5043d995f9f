"""A workload's process is built from the instance's non-secret settings only."""

import io
import subprocess

from provisioning.running import taskrun
from provisioning.shared import layout
from provisioning.shared.secretgen import env_file_line


def test_the_task_environment_holds_the_settings_and_no_secret(tmp_path, monkeypatch):
    files = {
        "AIRFLOW_ENV": env_file_line("AIRFLOW_HOME", layout.AIRFLOW_HOME),
        "ROLE_ENV": env_file_line("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor"),
        "SECRETS_ENV": env_file_line("AIRFLOW__CORE__FERNET_KEY", "not-for-tasks"),
    }
    for name, text in files.items():
        path = tmp_path / name.lower()
        path.write_text(text)
        monkeypatch.setattr(layout, name, str(path))
    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "mysql://airflow:inherited@localhost/airflow")
    env = taskrun.task_environment()
    assert env["AIRFLOW_HOME"] == layout.AIRFLOW_HOME and env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["USER"] == env["LOGNAME"] == layout.TASK_USER and env["HOME"] == layout.TASK_HOME
    assert "not-for-tasks" not in env.values() and "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN" not in env


def test_the_workload_runs_in_a_fresh_interpreter_and_its_status_is_the_answer(tmp_path, monkeypatch):
    calls = []

    def call(argv, **kw):
        with open(argv[-1], "rb") as handed:
            calls.append((argv, kw, handed.read()))
        return 3

    monkeypatch.setattr(subprocess, "call", call)
    monkeypatch.setattr(taskrun, "task_environment", lambda: {"HOME": layout.TASK_HOME})
    answer = io.BytesIO()
    assert taskrun.main(io.BytesIO(b'{"ti": "x"}'), answer) == 0
    assert answer.getvalue() == b"3\n"
    argv, kw, handed = calls[0]
    assert argv[:3] == [layout.VENV + "/bin/python", "-m", "airflow.sdk.execution_time.execute_workload"]
    assert handed == b'{"ti": "x"}' and kw["env"] == {"HOME": layout.TASK_HOME}
