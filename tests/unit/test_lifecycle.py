"""The pipeline's records: which launched instance status and ssh talk to."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from airflow_ami import lifecycle
from airflow_ami.clouds import InstanceRecord
from airflow_ami.image.record import Baked
from airflow_ami.settings import RECORD, BakeSettings, LaunchSettings, load
from airflow_ami.settings.fields import SettingsError


def record_a_bake(ami_id: str, **bake: str) -> None:
    """ami.json as build-ami writes it for an AMI baked with these settings."""
    baked = load(BakeSettings, cli={"cloud": "local", **bake})
    bdir = lifecycle.BuildDir.of(baked)
    bdir.write(bdir.ami_record, {**baked.reaching(RECORD), "ami_id": ami_id, "amis": {baked.region: ami_id}})


def test_status_and_ssh_go_to_the_controller_after_a_worker_was_launched_last(build_root: Path) -> None:
    s = load(LaunchSettings, cli={"cloud": "local", "role": "worker", "cluster": "analytics"})
    bdir = lifecycle.BuildDir.of(s)
    node = {
        "cloud": "local",
        "ami_id": "ami-1",
        "region": "us-east-1",
        "ssh_user": "admin",
        "cluster": "analytics",
        "host_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA=="],
    }
    controller = {
        **node,
        "instance_id": "i-1",
        "address": "10.0.0.1",
        "role": "controller",
        "ssh_key_file": "k",
    }
    worker = {**node, "instance_id": "i-2", "address": "10.0.0.2", "role": "worker", "ssh_key_file": "k"}
    bdir.write(bdir.instance_record, worker)
    bdir.write(bdir.cluster_record, {"cluster": "analytics", "members": [controller, worker]})
    assert lifecycle.launched(bdir).instance_id == "i-1"
    verify_config = bdir.ssh_config
    argv = lifecycle.ssh_argv(s, ["hostname"])
    assert argv[-2:] == ["admin@10.0.0.1", "hostname"]
    assert argv[2] != str(verify_config), "ssh beside a running verify keeps the suite's known hosts"
    # ssh trusts the host keys launch recorded, and no other.
    config = Path(argv[2]).read_text()
    assert "StrictHostKeyChecking yes" in config
    known = Path(argv[2] + ".known_hosts").read_text()
    assert known == "10.0.0.1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA==\n"


def test_ssh_refuses_an_instance_whose_host_keys_were_not_recorded(build_root: Path) -> None:
    s = load(LaunchSettings, cli={"cloud": "local"})
    bdir = lifecycle.BuildDir.of(s)
    bdir.write(
        bdir.instance_record,
        InstanceRecord("local", "i-1", "ami-1", "us-east-1", "10.0.0.1", "admin", "k").as_record(),
    )
    with pytest.raises(lifecycle.verify.UnknownHostKeys, match="i-1"):
        lifecycle.ssh_argv(s, ["hostname"])


def test_launch_reaches_the_api_as_the_image_was_baked(build_root: Path) -> None:
    s = load(LaunchSettings, cli={"cloud": "local"})
    record_a_bake(
        "ami-1", api_tls="self-signed", api_port="8443", admin_username="ops", admin_password_store="ssm"
    )
    instance = InstanceRecord("local", "i-1", "ami-1", "us-east-1", "10.0.0.1", "admin", "k")
    image = lifecycle.image_of(s, "ami-1")
    assert lifecycle.cloud_for(s).api_url(s, image, instance) == "https://10.0.0.1:8443"
    lines = lifecycle.ready(s, instance)
    assert (
        lines[:2] == ["url: https://10.0.0.1:8443/", "admin user: ops"]
        and "aws ssm get-parameter" in lines[3]
    )


class LaunchOnly:
    """A cloud whose launch returns an instance at once."""

    def launch(self, settings: object, image: Baked) -> InstanceRecord:
        return InstanceRecord("local", "i-1", image.ami_id, "us-east-1", "10.0.0.1", "admin", "k")


@pytest.mark.parametrize("wait", [True, False])
def test_launch_waits_for_airflow_only_when_asked(
    build_root: Path, monkeypatch: pytest.MonkeyPatch, wait: bool
) -> None:
    waited: list[str] = []
    monkeypatch.setattr(lifecycle, "cloud_for", lambda _s: LaunchOnly())
    monkeypatch.setattr(
        lifecycle, "wait_for_airflow", lambda _s, _image, head, _o: waited.append(head.instance_id)
    )
    record_a_bake("ami-1")
    (head,) = lifecycle.launch(load(LaunchSettings, cli={"cloud": "local"}), "ami-1", wait=wait)
    assert head.instance_id == "i-1" and waited == (["i-1"] if wait else [])


def test_status_prints_the_task_figures_when_the_database_node_answers() -> None:
    report = {
        "instances": [{"role": "controller", "instance_id": "i-1", "address": "10.0.0.1", "running": True}],
        "healthy": True,
        "health": {"scheduler": "healthy"},
        "api_url": "http://10.0.0.1:8080",
        "tasks": {"queued": 3, "running": 2, "failed in the last hour": 1, "succeeded in the last hour": 9},
    }
    text = lifecycle.status_text(report)
    assert "tasks: 3 queued, 2 running, 1 failed in the last hour, 9 succeeded in the last hour" in text
    assert "tasks:" not in lifecycle.status_text({**report, "tasks": None})


def test_no_task_figures_when_ssh_does_not_reach_the_instance(build_root: Path) -> None:
    bdir = lifecycle.BuildDir.of(load(LaunchSettings, cli={"cloud": "local"}))
    unreachable = InstanceRecord(
        "local", "i-1", "ami-1", "us-east-1", "127.0.0.1", "admin", "/nonexistent/key"
    )
    assert lifecycle.task_figures(bdir, unreachable) is None


def test_rehearse_with_an_ami_bakes_nothing_and_tears_down(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def no_bake(settings: object) -> dict[str, object]:
        raise AssertionError("rehearse --ami baked")

    monkeypatch.setattr(lifecycle, "build_image", no_bake)
    monkeypatch.setattr(lifecycle, "launch", lambda settings, ami, out: calls.append(f"launch {ami}"))
    monkeypatch.setattr(lifecycle, "verify_instance", lambda *a, **kw: calls.append("verify") or 0)
    monkeypatch.setattr(lifecycle, "teardown", lambda settings: calls.append("teardown") or [])
    bake, launching = load(BakeSettings, cli={"cloud": "local"}), load(LaunchSettings, cli={"cloud": "local"})
    out = io.StringIO()
    assert lifecycle.rehearse(bake, launching, out=out, ami_id="ami-0123456789abcdef0") == 0
    assert calls == ["launch ami-0123456789abcdef0", "verify", "teardown"]
    assert "rehearse: passed" in out.getvalue() and "--- build-ami" not in out.getvalue()
    with pytest.raises(SettingsError, match="setting ami: must be an AMI id"):
        lifecycle.rehearse(bake, launching, out=out, ami_id="ami-nope")
    assert calls[3:] == [], "a bad --ami reaches no cloud"
