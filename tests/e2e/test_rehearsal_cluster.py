"""The cluster rehearsal, end to end: `./bake rehearse --workers 2` on the AMI the
single-instance rehearsal (test_rehearsal.py, just before this module) built."""

from __future__ import annotations

import dataclasses
import time

from airflow_ami.lifecycle import reusable_ami
from airflow_ami.localcloud import LocalCloud
from airflow_ami.settings import load_settings
from tests.infra.lib import FANOUT_DAG
from tests.infra.test_cluster import in_the_bundle, running_tis

from .conftest import bake, host_of, our_leftovers

PHASES = ("launch-controller", "launch-workers", "verify", "teardown")


def test_rehearse_a_controller_and_two_workers() -> None:
    result = bake("rehearse", "--workers", "2", "--worker-concurrency", "4", "--", "-rA")
    assert result.returncode == 0, "rehearse --workers 2 failed; its output is above"
    assert "rehearse: passed" in result.stdout
    assert "rehearse: reusing ami-" in result.stdout, "the cluster rehearsal baked instead of reusing the AMI"
    for phase in PHASES:
        assert f"rehearse: --- {phase}" in result.stdout
    assert (
        "PASSED tests/infra/test_cluster.py::test_a_fan_out_spreads_over_the_workers_and_overlaps"
        in result.stdout
    )
    assert our_leftovers() == []


# A worker launched while tasks wait in the queue takes some within this many seconds.
SCALE_OUT_BOUND = 300


def test_a_worker_launched_while_tasks_wait_starts_taking_them() -> None:
    settings = load_settings(cli={"cloud": "local"})
    ami = reusable_ami(settings)
    assert ami, "no AMI of the single-instance rehearsal to reuse"
    cloud = LocalCloud()
    cluster = dataclasses.replace(settings, cluster="scale-out", worker_concurrency=2)
    try:
        controller = host_of(cloud.launch(dataclasses.replace(cluster, role="controller"), ami))
        cloud.launch(dataclasses.replace(cluster, role="worker"), ami)
        state = controller.wait_healthy(300)
        assert state["healthy"], controller.health_message(state, "the controller after launch")
        with in_the_bundle(controller, FANOUT_DAG):
            run_id = controller.trigger(FANOUT_DAG, {"n": 8, "seconds": 20})
            running_tis(controller, FANOUT_DAG, run_id)
            started = time.monotonic()
            second = cloud.launch(dataclasses.replace(cluster, role="worker"), ami)
            taken = False
            while not taken and time.monotonic() - started < SCALE_OUT_BOUND:
                time.sleep(3)
                _, body = controller.api("GET", f"/api/v2/dags/{FANOUT_DAG}/dagRuns/{run_id}/taskInstances")
                taken = any(
                    t.get("hostname") == second.address for t in (body or {}).get("task_instances", [])
                )
            took = time.monotonic() - started
            print(f"scale-out: the new worker took a queued task {took:.0f} s after its launch began")
            assert taken, (
                f"the worker launched at {second.address} took no queued task in {SCALE_OUT_BOUND} s"
            )
            run = controller.wait_run(FANOUT_DAG, run_id)
            assert run["state"] == "success", controller.run_summary(run)
    finally:
        cloud.teardown(settings)
        assert our_leftovers() == []
