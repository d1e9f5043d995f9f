"""The cluster rehearsal, end to end: `./bake rehearse --workers 2` on the AMI the
single-instance rehearsal (test_rehearsal.py, just before this module) built."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator

import pytest

from airflow_ami.clouds import InstanceRecord, cluster_ports
from airflow_ami.clouds.local import LocalCloud
from airflow_ami.driver.instance import FANOUT_DAG, FIRSTBOOT_UNIT, Instance, layout
from airflow_ami.image.record import Baked
from airflow_ami.lifecycle import image_of, reusable_ami
from airflow_ami.settings import LaunchSettings, load
from tests.e2e.conftest import bake, driven, our_leftovers
from tests.infra.test_cluster import reaches, running_tis, secret_digests

PHASES = ("launch", "verify", "teardown")


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


@dataclasses.dataclass
class Cluster:
    cloud: LocalCloud
    settings: LaunchSettings
    image: Baked
    controller: Instance

    def launch(self, role: str, cluster: str | None = None, user_data: str | None = None) -> InstanceRecord:
        settings = dataclasses.replace(self.settings, role=role, cluster=cluster or self.settings.cluster)
        return self.cloud.launch(settings, self.image, user_data=user_data)


@pytest.fixture(scope="module")
def scale_out() -> Iterator[Cluster]:
    """A controller and one worker of cluster scale-out, on the last rehearsal's AMI."""
    settings = load(LaunchSettings, cli={"cloud": "local"})
    ami = reusable_ami(settings)
    assert ami, "no AMI of the single-instance rehearsal to reuse"
    cloud = LocalCloud()
    image = image_of(settings, ami)
    cluster = dataclasses.replace(settings, cluster="scale-out", worker_concurrency=2)
    try:
        controller = driven(cloud.launch(dataclasses.replace(cluster, role="controller"), image))
        yield Cluster(cloud, cluster, image, controller)
    finally:
        cloud.teardown(settings)
        assert our_leftovers() == []


def first_boot_ended(host: Instance, timeout: float = 400) -> str:
    """Wait until first boot has succeeded or failed; returns its unit's state."""
    deadline = time.monotonic() + timeout
    while (state := host.sh(f"systemctl is-active {FIRSTBOOT_UNIT}").stdout.strip()) not in (
        "active",
        "failed",
    ):
        assert time.monotonic() < deadline, host.sh(f"journalctl -u {FIRSTBOOT_UNIT} -n 40").stdout
        time.sleep(3)
    return state


def test_a_worker_added_while_tasks_wait_takes_them_and_scale_in_removes_one(scale_out: Cluster) -> None:
    controller = scale_out.controller
    scale_out.launch("worker")
    state = controller.wait_healthy(300)
    assert state["healthy"], controller.health_message(state, "the controller after launch")
    with controller.in_the_bundle(FANOUT_DAG):
        run_id = controller.trigger(FANOUT_DAG, {"n": 8, "seconds": 20})
        running_tis(controller, FANOUT_DAG, run_id)
        started = time.monotonic()
        before = {i.instance_id for i in scale_out.cloud.instances(scale_out.settings)}
        scale_out.cloud.scale(scale_out.settings, 2)
        (second,) = [i for i in scale_out.cloud.instances(scale_out.settings) if i.instance_id not in before]
        taken = False
        while not taken and time.monotonic() - started < SCALE_OUT_BOUND:
            time.sleep(3)
            _, body = controller.api("GET", f"/api/v2/dags/{FANOUT_DAG}/dagRuns/{run_id}/taskInstances")
            taken = any(t.get("hostname") == second.address for t in (body or {}).get("task_instances", []))
        took = time.monotonic() - started
        print(f"scale-out: the new worker took a queued task {took:.0f} s after its launch began")
        assert taken, f"the worker launched at {second.address} took no queued task in {SCALE_OUT_BOUND} s"
        run = controller.wait_run(FANOUT_DAG, run_id)
        assert run["state"] == "success", controller.run_summary(run)
    scale_out.cloud.scale(scale_out.settings, 1)
    workers = [
        i
        for i in scale_out.cloud.instances(scale_out.settings)
        if i.role == "worker" and i.cluster == scale_out.settings.cluster
    ]
    assert len(workers) == 1, f"scaled in to 1 worker, still running: {workers}"


def test_two_clusters_share_no_secret_and_no_network(scale_out: Cluster) -> None:
    other = driven(scale_out.launch("controller", cluster="other"))
    assert first_boot_ended(other) == "active", other.sh(f"journalctl -u {FIRSTBOOT_UNIT} -n 40").stdout
    ours, theirs = secret_digests(scale_out.controller), secret_digests(other)
    shared = sorted(k for k, v in ours.items() if theirs.get(k) == v)
    assert ours and not shared, f"clusters scale-out and other share {shared}"
    address = scale_out.controller.check("hostname -I").split()[0]
    closed = {port: reaches(other, address, port) for port in cluster_ports(scale_out.image)}
    assert not any(closed.values()), f"another cluster's controller reaches ours: {closed}"


def test_bad_user_data_fails_first_boot_and_joins_nothing(scale_out: Cluster) -> None:
    good = {
        "role": "worker",
        "cluster": "scale-out",
        "controller": "10.0.0.1",
        "dags_s3_uri": "s3://bucket/dags",
    }
    bad = json.dumps({**good, "worker_concurrency": "many"})
    node = driven(scale_out.launch("worker", user_data=bad))
    assert first_boot_ended(node) == "failed"
    lines = node.check(f"journalctl -u {FIRSTBOOT_UNIT} -o cat | grep 'user data'").splitlines()
    assert len(lines) == 1 and "worker_concurrency" in lines[0], f"one line naming the key: {lines}"
    shown = node.check(f"systemctl show -p ExecMainStatus -p NRestarts {FIRSTBOOT_UNIT}")
    status = dict(line.split("=", 1) for line in shown.splitlines())
    assert status == {"ExecMainStatus": str(layout.BAD_USER_DATA_EXIT), "NRestarts": "0"}, status
    assert node.sh(f"ls -A {layout.ROLE_DIR}").stdout.strip() == "", "a role marker after bad user data"
    started = [
        u for u in layout.SERVICE_UNITS if node.sh(f"systemctl is-active {u}").stdout.strip() == "active"
    ]
    assert started == [], f"units started after bad user data: {started}"
