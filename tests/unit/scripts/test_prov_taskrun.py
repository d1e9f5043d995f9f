"""A workload's process is built from the instance's non-secret settings only."""

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
