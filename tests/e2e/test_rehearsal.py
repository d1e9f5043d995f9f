"""./bake rehearse end to end in the local cloud, interrupted and whole, plus broken instances."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import testinfra

from airflow_ami.clouds import InstanceRecord
from airflow_ami.clouds.local import LocalCloud
from airflow_ami.lifecycle import image_of
from airflow_ami.settings import LaunchSettings, load
from airflow_ami.verify import ssh_config
from tests.e2e.conftest import REPO, bake, identity, our_leftovers
from tests.infra import breakage

# The local cloud's default build (packer/clouds/local.yaml: debian, x86_64).
BUILD = REPO / "build" / "debian-x86_64-local"


def interrupt_rehearse_when(trigger: str, *args: str, timeout: float = 2400) -> tuple[int, str]:
    """Start ./bake rehearse [args], press Ctrl-C (SIGINT to its process group) once `trigger` is printed.

    It starts as a terminal's foreground job would, SIGINT at its default. A suite run
    in the background (`./bake test &`, nohup, some CI wrappers) has SIGINT ignored, and
    exec keeps an ignored signal ignored: Python would then install no KeyboardInterrupt
    handler and the Ctrl-C would reach nothing but Packer. A handler of ours, by contrast,
    is reset to the default by exec.
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen(
            ["./bake", "rehearse", *args],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    assert proc.stdout is not None
    seen = []
    deadline = time.monotonic() + timeout
    for line in proc.stdout:
        seen.append(line)
        if trigger in line:
            os.killpg(proc.pid, signal.SIGINT)
            break
        if time.monotonic() > deadline:
            break
    seen += proc.stdout.readlines()
    code = proc.wait(timeout=600)
    output = "".join(seen)
    print(output)
    assert any(trigger in line for line in seen), f"never saw {trigger!r} before the run ended"
    return code, output


def test_ctrl_c_during_the_packer_build_leaves_nothing() -> None:
    code, output = interrupt_rehearse_when("Provisioning with shell script")
    assert code != 0
    assert "rehearse: interrupted" in output
    # Packer itself stopped and cleaned up: no AMI came out of the interrupted build.
    assert "AMIs were created" not in output
    assert "packer build exited with status 0" not in output
    assert our_leftovers() == []


def test_rehearse_builds_launches_verifies_and_tears_down() -> None:
    result = bake("rehearse")
    assert result.returncode == 0, "rehearse failed; its output is above"
    assert "rehearse: passed" in result.stdout
    for phase in ("build-ami", "launch", "verify", "teardown"):
        assert f"rehearse: --- {phase}" in result.stdout
    assert "tests/infra/test_ui_browser.py ." in result.stdout, "the UI was not checked in a browser"
    assert our_leftovers() == []


def test_ctrl_c_during_verify_leaves_nothing() -> None:
    """On the AMI the rehearsal just built (--ami: the interruption is what is tested, not a bake)."""
    ami = json.loads((BUILD / "ami.json").read_text())["ami_id"]
    code, output = interrupt_rehearse_when("tests/infra/test_airflow.py", "--ami", ami)
    assert code != 0
    assert f"rehearse: rehearsing {ami}" in output and "rehearse: interrupted" in output
    assert our_leftovers() == []


@pytest.fixture(scope="module")
def launched() -> Iterator[str]:
    """An instance of the AMI the rehearsal built, for the negative checks; launch's output."""
    result = bake("launch", "--cloud", "local")
    assert result.returncode == 0, "launch failed; its output is above"
    yield result.stdout
    assert bake("teardown", "--cloud", "local").returncode == 0
    assert our_leftovers() == []
    gone = bake("status", "--cloud", "local")
    assert gone.returncode == 1 and "nothing launched" in gone.stderr


def test_launch_waits_for_airflow_and_status_and_ssh_reach_it(launched: str) -> None:
    record = json.loads((BUILD / "instance.json").read_text())
    assert "Airflow healthy at" in launched
    assert f"url: http://{record['address']}:" in launched and "admin user: admin" in launched
    status = bake("status", "--cloud", "local", "--json")
    assert status.returncode == 0, status.stdout
    report = json.loads(status.stdout)
    assert report["healthy"] is True and [r["running"] for r in report["instances"]] == [True]
    shell = bake("ssh", "--cloud", "local", "--", "hostname", "-I")
    assert shell.returncode == 0 and record["address"] in shell.stdout.split()


@pytest.fixture(scope="module")
def instance_host(launched: str) -> tuple[Any, str, str]:
    """(testinfra host, its --hosts spec, ssh_config) of the launched instance."""
    record = json.loads((BUILD / "instance.json").read_text())
    config = str(ssh_config(BUILD / "ssh_config", InstanceRecord.from_record(record)))
    spec = f"ssh://{record['ssh_user']}@{record['address']}"
    return testinfra.get_host(spec, ssh_config=config), spec, config


@pytest.mark.parametrize("case", sorted(breakage.CASES))
def test_a_broken_instance_fails_verification_naming_the_cause(
    instance_host: tuple[Any, str, str], case: str
) -> None:
    host, spec, config = instance_host
    result = breakage.check_case(case, host, spec, ssh_config=config)
    assert result.ok, result.explain()


def test_two_instances_of_one_image_share_no_secret_or_identity(instance_host: tuple[Any, str, str]) -> None:
    host, _, _ = instance_host
    record = json.loads((BUILD / "instance.json").read_text())
    settings = load(LaunchSettings, cli={"cloud": "local"})
    second = LocalCloud().launch(settings, image_of(settings, record["ami_id"]))
    config = ssh_config(BUILD / "ssh_config-second", second)
    other = testinfra.get_host(f"ssh://{second.ssh_user}@{second.address}", ssh_config=str(config))
    first_id, second_id = identity(host), identity(other)
    assert set(first_id) == set(second_id)
    assert len([k for k in first_id if k.startswith("secret ")]) >= 4, first_id.keys()
    shared = [key for key in first_id if first_id[key] == second_id[key]]
    assert shared == [], f"two instances of one image share {shared}"


# What `bench --quick --on-launched` measures on an instance it did not launch itself.
ON_LAUNCHED_FIGURES = (
    "image_added_mb",
    "idle_rss_mb",
    "fanout_span_s",
    "fanout_serial_span_s",
    "efficiency",
    "speedup",
    "tiny_tasks_per_min",
    "trigger_to_first_task_s",
    "install_uv_s",
    "install_pip_s",
    "install_ratio",
    "boot_migrate_s",
)


def is_a_measure(value: object) -> bool:
    return isinstance(value, (int, float)) and value > 0


def test_bench_quick_measures_the_launched_instance_and_leaves_it_healthy(launched: str) -> None:
    """The bench's code path once, on this module's instance (last: it empties its database).
    Figures are only checked for being measured, never against a target."""
    bench_json = REPO / "build" / "bench.json"
    bench_json.unlink(missing_ok=True)
    result = bake("bench", "--quick", "--on-launched")
    assert result.returncode == 0, "bench failed; its output is above"
    figures = json.loads(bench_json.read_text())
    assert figures["mode"] == "quick" and figures["on_launched"] is True
    unmeasured = [k for k in ON_LAUNCHED_FIGURES if not is_a_measure(figures.get(k))]
    assert unmeasured == [], f"bench.json lacks {unmeasured}"
    assert isinstance(figures["per_task_rss_mb"], (int, float))
    assert figures["install_pins"] > 0 and figures["idle_rss_by_unit_mb"]
    assert "tiny_tasks_per_min" in result.stdout and "bench: wrote build/bench.json" in result.stdout
    assert bake("status", "--cloud", "local").returncode == 0, "the instance is not healthy after the bench"
