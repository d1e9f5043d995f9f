"""The ./bake command line: bad input is one line, status 2, nothing written, no cloud call."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

# Each test runs ./bake in a subprocess: out of the fast loop (-m "not slow").
pytestmark = pytest.mark.slow
# This machine's Packer predates plugins, so it cannot find the build host's address itself.
FROM_CI = ("--ssh-cidrs", "192.0.2.10/32")


@pytest.fixture
def listener() -> Iterator[tuple[str, list[object]]]:
    """A loopback 'EC2 endpoint' that records every connection made to it."""
    calls: list[object] = []
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            calls.append(conn)
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}", calls
    stop.set()
    thread.join()
    server.close()


BAD = [
    ("render", ["--region", "mars-1"], "setting region"),
    ("render", ["--os", "windows"], "setting os"),
    ("render", ["--volume-size", "2"], "setting volume_size"),
    ("build-ami", ["--airflow-version", "2.9.0"], "setting airflow_version"),
    ("build-ami", ["--tags", "aws:x=1"], "setting tags"),
    ("build-ami", ["--ami-users", "42"], "setting ami_users"),
    ("launch", ["--cloud", "aws", "--allow-cidr", "203.0.113.7"], "setting allow_cidr"),
    ("launch", ["--cloud", "aws", "--role", "worker", "--cluster", "a"], "setting role"),
    (
        "launch",
        [
            "--cloud",
            "aws",
            "--workers",
            "2",
            "--iam-instance-profile",
            "node",
            "--worker-iam-instance-profile",
            "w",
        ],
        "setting dags_s3_uri",
    ),
    (
        "launch",
        [
            "--cloud",
            "aws",
            "--workers",
            "2",
            "--iam-instance-profile",
            "node",
            "--dags-s3-uri",
            "s3://dags/d",
        ],
        "setting worker_iam_instance_profile",
    ),
    ("status", ["--profile", "no spaces"], "setting profile"),
    ("scale", ["--cloud", "local", "--workers", "99"], "setting workers"),
    ("launch", ["--cloud", "aws", "--cpu-quota", "66"], "setting cpu_quota"),
    ("launch", ["--cloud", "local", "--cpu-quota", "5"], "setting cpu_quota"),
    # A flag of a setting the task does not use is refused like any bad input.
    (
        "render",
        ["--worker-concurrency", "8"],
        "render takes no --worker-concurrency (a launch setting, which render",
    ),
    ("launch", ["--api-port", "9090"], "launch takes no --api-port (a bake setting, which launch"),
    ("ssh", ["--airflow-version", "3.3.2"], "ssh takes no --airflow-version"),
    ("teardown", ["--no-such-flag"], "teardown takes no --no-such-flag;"),
    # A task's own number flags: a word is one line too, not invoke's traceback.
    ("prune-amis", ["--keep", "abc"], "--keep takes a whole number, not 'abc'"),
    ("upgrade", ["--drain-seconds=x"], "--drain-seconds takes a number, not 'x'"),
    ("upgrade", ["--drain-seconds", "nan"], "setting drain_seconds"),
    # What the old instance's launch decided the new one keeps: not a flag of upgrade.
    ("upgrade", ["--role", "worker"], "upgrade takes no --role (a launch setting, which upgrade"),
    ("upgrade", ["--backup-s3-uri", "s3://b/p"], "upgrade takes no --backup-s3-uri"),
]


@pytest.mark.parametrize(("task", "args", "named"), BAD)
def test_bad_input_exits_2_with_one_line_and_leaves_nothing(
    listener: tuple[str, list[object]], task: str, args: list[str], named: str
) -> None:
    endpoint, calls = listener
    build_name = f"test-bad-input-{task}"
    result = subprocess.run(
        ["./bake", task, *args, "--ec2-endpoint", endpoint, "--build-name", build_name],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], result.stderr
    assert result.stdout == ""
    assert not Path("build", build_name).exists()
    assert calls == []


def test_a_task_is_not_refused_over_a_setting_it_does_not_take(listener: tuple[str, list[object]]) -> None:
    """Scaling an AWS cluster's workers needs no instance profile or DAG bundle (a cluster
    launch's settings, whose checks refused `scale --workers 3` before): it finds no group."""
    endpoint, calls = listener
    scale = ["./bake", "scale", "--cloud", "aws", "--cluster", "analytics", "--workers", "3"]
    result = subprocess.run(
        [*scale, "--ec2-endpoint", endpoint, "--build-name", "test-scale-takes"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (result.returncode, result.stderr.count("\n")) == (1, 1), result.stderr
    assert "no Auto Scaling group recorded" in result.stderr
    assert calls == []


def flags_in_help(task: str) -> set[str]:
    listing = subprocess.run(["./bake", task, "--help"], capture_output=True, text=True, check=True).stdout
    return set(re.findall(r"^  (--[a-z0-9-]+)", listing, flags=re.M))


def test_each_task_lists_only_the_settings_it_uses() -> None:
    target = {"--cloud", "--os", "--arch", "--region", "--profile", "--ec2-endpoint", "--build-name"}
    assert flags_in_help("ssh") == target
    launch = flags_in_help("launch")
    assert {"--workers", "--allow-cidr", "--instance-type", "--ami"} <= launch
    assert not {"--api-port", "--airflow-version", "--uv-version", "--mysql-signing-key-fingerprint"} & launch
    render = flags_in_help("render")
    assert {"--api-port", "--airflow-version"} <= render and not {
        "--workers",
        "--worker-concurrency",
    } & render
    assert flags_in_help("scale") == target | {"--cluster", "--workers"}


def test_a_flag_that_sets_a_bake_and_a_launch_setting_says_both() -> None:
    """rehearse's --instance-type is the build instance's and the launched one's."""
    listing = subprocess.run(
        ["./bake", "rehearse", "--help"], capture_output=True, text=True, check=True
    ).stdout
    said = " ".join(listing.split("--instance-type", 1)[1].split("--", 1)[0].split())
    assert "bake: build instance type" in said and "| launch: instance type of the launched instances" in said


def test_every_task_has_a_one_line_description() -> None:
    listing = subprocess.run(["./bake", "--list"], capture_output=True, text=True, check=True).stdout
    tasks = [
        line.split()[0]
        for line in listing.splitlines()[2:]
        if line.startswith("  ") and not line.startswith("    ")
    ]
    assert {"render", "validate", "build-ami", "test"} <= set(tasks)
    for line in listing.splitlines()[2:]:
        if line.startswith("  ") and not line.startswith("    "):
            assert len(line.split(None, 1)) == 2, f"task without a description: {line!r}"


def test_rendering_amazon_linux_2_warns_once_about_its_end_of_support() -> None:
    warned = subprocess.run(
        ["./bake", "render", "--os", "amazon-linux-2", "--build-name", "test-eol-warning", *FROM_CI],
        capture_output=True,
        text=True,
        check=False,
    )
    assert warned.returncode == 0, warned.stderr
    lines = warned.stderr.strip().splitlines()
    assert len(lines) == 1 and "end of support on 2026-06-30" in lines[0] and "amazon-linux-2023" in lines[0]
    quiet = subprocess.run(
        ["./bake", "render", "--os", "amazon-linux-2023", "--build-name", "test-eol-warning", *FROM_CI],
        capture_output=True,
        text=True,
        check=False,
    )
    assert quiet.returncode == 0 and quiet.stderr == ""
    shutil.rmtree(Path("build", "test-eol-warning"))


def test_arguments_after_dashes_keep_their_spaces() -> None:
    # `-k "a or b"` must reach pytest as one argument, as the README shows for `-m "not slow"`.
    result = subprocess.run(
        [
            "./bake",
            "test",
            "--",
            "--collect-only",
            "-q",
            "tests/unit/test_settings.py",
            "-k",
            "test_defaults_come_from_the_amazon_linux_2_profile or test_cli_beats_config_beats_profile",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    collected = [line for line in result.stdout.splitlines() if "::" in line]
    assert len(collected) == 2, result.stdout
