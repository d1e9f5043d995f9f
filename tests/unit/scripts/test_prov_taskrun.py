"""A workload's process is built from the instance's non-secret settings only."""

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

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


def test_the_server_is_the_venv_s_python_with_the_task_environment_and_the_socket(tmp_path, monkeypatch):
    calls = []
    monkeypatch.chdir("/")  # main changes directory: monkeypatch puts this test's back
    monkeypatch.setattr(layout, "TASK_HOME", str(tmp_path))
    monkeypatch.setattr(taskrun, "task_environment", lambda: {"HOME": str(tmp_path)})
    taskrun.main(execve=lambda *args: calls.append(args))
    ((python, argv, env),) = calls
    assert python == layout.VENV + "/bin/python" and argv[1:] == ["-c", taskrun.SERVER, layout.CODE_DIR, "3"]
    assert env == {"HOME": str(tmp_path)} and os.getcwd() == str(tmp_path)


# A stand-in for the parts of Airflow the server imports: execute_workload reports what its
# process sees (its pid, its environment, what it inherited) and exits as the workload says.
FAKE_AIRFLOW = {
    "airflow/__init__.py": "",
    "airflow/executors/__init__.py": "",
    "airflow/executors/workloads.py": "All = dict\n",
    "airflow/sdk/__init__.py": "",
    "airflow/sdk/execution_time/__init__.py": "",
    "airflow/sdk/execution_time/supervisor.py": "",
    "airflow/sdk/execution_time/task_runner.py": "",
    "airflow/dag_processing/__init__.py": "",
    "airflow/dag_processing/dagbag.py": "import os\nIMPORTED_IN = os.getpid()\n",
    "airflow/sdk/execution_time/execute_workload.py": """
import gc, json, os, sys, time
def execute_workload(workload):
    time.sleep(workload["sleep"])
    dagbag = sys.modules.get("airflow.dag_processing.dagbag")
    report = {
        "pid": os.getpid(),
        "env": dict(os.environ),
        "dagbag_imported_in": getattr(dagbag, "IMPORTED_IN", None),
        "frozen_objects": gc.get_freeze_count(),
    }
    with open(workload["report"], "w") as fh:
        json.dump(report, fh)
    if workload["exit"]:
        sys.exit(workload["exit"])
""",
}


def hand_over(path, workload):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.connect(path)
        conn.sendall(json.dumps(workload).encode())
        conn.shutdown(socket.SHUT_WR)
        return b"".join(iter(lambda: conn.recv(4096), b""))


def test_the_server_forks_a_process_per_workload_that_holds_no_secret_and_answers_its_status(tmp_path):
    for rel, text in FAKE_AIRFLOW.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp_path / "workload.sock"))
    listener.listen()
    scripts = str(Path(taskrun.__file__).parents[2])
    # The server's own environment is the one a stale or leaked value would come from.
    env = {
        "PYTHONPATH": str(tmp_path),
        "AIRFLOW__CORE__FERNET_KEY": "not-for-tasks",
        "PATH": os.environ["PATH"],
    }
    server = subprocess.Popen(
        [sys.executable, "-c", taskrun.SERVER, scripts, str(listener.fileno())],
        env=env,
        pass_fds=[listener.fileno()],
        stdout=subprocess.PIPE,
    )
    try:
        assert b"ready" in server.stdout.readline()
        slow = {"sleep": 1.0, "report": str(tmp_path / "slow.json"), "exit": 0}
        fast = {"sleep": 0, "report": str(tmp_path / "fast.json"), "exit": 3}
        answers = {}
        thread = threading.Thread(
            target=lambda: answers.update(slow=hand_over(str(tmp_path / "workload.sock"), slow))
        )
        thread.start()
        answers["fast"] = hand_over(str(tmp_path / "workload.sock"), fast)
        assert "slow" not in answers, "the fast workload did not wait for the slow one"
        thread.join()
        assert answers == {"slow": b"0\n", "fast": b"3\n"}
        reports = [json.loads((tmp_path / f"{name}.json").read_text()) for name in ("slow", "fast")]
        assert len({server.pid, *(r["pid"] for r in reports)}) == 3, "one process forked per workload"
        for report in reports:
            assert "not-for-tasks" not in report["env"].values()
            assert report["env"]["USER"] == layout.TASK_USER and report["env"]["HOME"] == layout.TASK_HOME
            # What every workload would otherwise pay again: the DAG bag's import, a full collection.
            assert report["dagbag_imported_in"] == server.pid and report["frozen_objects"] > 0
    finally:
        server.kill()
        server.wait()
        listener.close()
