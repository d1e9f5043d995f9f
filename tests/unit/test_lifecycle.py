"""The pipeline's records: which launched instance status and ssh talk to."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_ami import lifecycle
from airflow_ami.settings import load_settings


def test_status_and_ssh_go_to_the_controller_after_a_worker_was_launched_last(build_root: Path) -> None:
    s = load_settings(cli={"cloud": "local", "role": "worker", "cluster": "analytics"})
    bdir = lifecycle.BuildDir.of(s)
    node = {
        "cloud": "local",
        "ami_id": "ami-1",
        "region": "us-east-1",
        "ssh_user": "admin",
        "cluster": "analytics",
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
    assert lifecycle.ssh_argv(s, ["hostname"])[-2:] == ["admin@10.0.0.1", "hostname"]


def test_launch_reaches_the_api_as_the_image_was_baked_not_as_launch_flags_say(build_root: Path) -> None:
    s = load_settings(cli={"cloud": "local"})
    bdir = lifecycle.BuildDir.of(s)
    baked = {
        "api_tls": "self-signed",
        "api_port": 8443,
        "admin_username": "ops",
        "admin_password_store": "ssm",
    }
    bdir.write(bdir.ami_record, {"ami_id": "ami-1", "amis": {"us-east-1": "ami-1"}, **baked})
    instance = lifecycle.Instance("local", "i-1", "ami-1", "us-east-1", "10.0.0.1", "admin", "k")
    assert (
        lifecycle.cloud_for(s).api_url(lifecycle.as_baked(s, instance), instance) == "https://10.0.0.1:8443"
    )
    lines = lifecycle.ready(s, instance)
    assert (
        lines[:2] == ["url: https://10.0.0.1:8443/", "admin user: ops"]
        and "aws ssm get-parameter" in lines[3]
    )
    other = lifecycle.Instance("local", "i-2", "ami-2", "us-east-1", "10.0.0.2", "admin", "k")
    assert lifecycle.as_baked(s, other) == s, "another AMI's instance: the record says nothing about it"


class LaunchOnly:
    """A cloud whose launch returns an instance at once."""

    def launch(self, settings: object, ami_id: str) -> lifecycle.Instance:
        return lifecycle.Instance("local", "i-1", ami_id, "us-east-1", "10.0.0.1", "admin", "k")


@pytest.mark.parametrize("wait", [True, False])
def test_launch_waits_for_airflow_only_when_asked(
    build_root: Path, monkeypatch: pytest.MonkeyPatch, wait: bool
) -> None:
    waited: list[str] = []
    monkeypatch.setattr(lifecycle, "cloud_for", lambda _s: LaunchOnly())
    monkeypatch.setattr(lifecycle, "wait_for_airflow", lambda _s, head, _o: waited.append(head.instance_id))
    (head,) = lifecycle.launch(load_settings(cli={"cloud": "local"}), "ami-1", wait=wait)
    assert head.instance_id == "i-1" and waited == (["i-1"] if wait else [])
