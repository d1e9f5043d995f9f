from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import botocore.exceptions
import pytest

from airflow_ami.clouds import autoscaling, launch_user_data
from airflow_ami.clouds.local import cloud, moto, reaper, system, vpc
from airflow_ami.clouds.local.network import Slot
from airflow_ami.clouds.local.state import locked_state
from airflow_ami.clouds.local.system import LocalCloudError
from airflow_ami.image.record import Baked
from airflow_ami.seam import contract
from airflow_ami.settings import BakeSettings, LaunchSettings, load


def test_not_root_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(LocalCloudError, match="needs root") as err:
        system.require_root()
    assert "\n" not in str(err.value)


def test_aws_env_never_reaches_real_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_PROFILE", "prod")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAREAL")
    env = moto.aws_env("eu-west-1", "http://127.0.0.1:5000")
    assert "AWS_PROFILE" not in env
    assert env["AWS_ACCESS_KEY_ID"] == "testing"
    assert env["AWS_DEFAULT_REGION"] == "eu-west-1"
    assert env["AWS_CONFIG_FILE"] == "/dev/null"


def fake_cache(tmp_path: Path) -> Path:
    (tmp_path / "base" / "abc123" / "rootfs").mkdir(parents=True)
    (tmp_path / "base" / ".build-zzz-1").mkdir()
    captured = tmp_path / "amis" / "ami-0aaaabbbbccccdddd"
    (captured / "rootfs").mkdir(parents=True)
    meta = {"ami_id": captured.name, "name": "airflow-3.3.2-x", "built": 1.0, "source_ami": "s"}
    (captured / "meta.json").write_text(json.dumps(meta))
    return tmp_path


def test_local_images_lists_base_and_captured_images(tmp_path: Path) -> None:
    cache = fake_cache(tmp_path)
    images = cloud.local_images(cache)
    base_id = cloud.base_ami_id("abc123")
    assert base_id == cloud.base_ami_id("abc123")  # stable across moto restarts
    assert set(images) == {base_id, "ami-0aaaabbbbccccdddd"}
    assert images[base_id]["name"] == "airflow-ami-base-debian-sid-abc123"
    assert cloud.image_rootfs(cache, "ami-0aaaabbbbccccdddd") == (
        cache / "amis" / "ami-0aaaabbbbccccdddd" / "rootfs"
    )
    with pytest.raises(LocalCloudError, match="build-ami --cloud local"):
        cloud.image_rootfs(cache, "ami-unknown")


def test_a_launched_image_is_the_last_the_cache_prunes(tmp_path: Path) -> None:
    cache = fake_cache(tmp_path)
    for n, ami_id in enumerate(("ami-0000000000000000a", "ami-0000000000000000b")):
        (cache / "amis" / ami_id / "rootfs").mkdir(parents=True)
        (cache / "amis" / ami_id / "meta.json").write_text(
            json.dumps({"ami_id": ami_id, "name": ami_id, "built": 1.0, "source_ami": "s"})
        )
        os.utime(cache / "amis" / ami_id, (1.5e9 + n, 1.5e9 + n))
    os.utime(cache / "amis" / "ami-0aaaabbbbccccdddd", (1e9, 1e9))
    cloud.image_rootfs(cache, "ami-0aaaabbbbccccdddd")  # launched: the oldest is used now
    pruned = cloud.prune_images(cache / "amis", 2)
    assert [p.name for p in pruned] == ["ami-0000000000000000a"]


@pytest.fixture
def moto_server(tmp_path: Path) -> Iterator[dict[str, int]]:
    cache = fake_cache(tmp_path)
    record = moto.start_moto(tmp_path / "moto.log", cloud.write_moto_amis(cache))
    yield record
    system.stop_process(record["pid"])


@pytest.mark.slow  # a moto_server
def test_moto_serves_our_images_to_a_packer_style_filter(moto_server: dict[str, int]) -> None:
    assert moto.moto_is_running(moto_server)
    ec2 = moto.ec2_client(moto_server["port"], "us-east-1")
    # The filters Packer's source_ami_filter sends, with the local cloud's owner/name.
    found = ec2.describe_images(
        Owners=[moto.MOTO_ACCOUNT_ID],
        Filters=[
            {"Name": "name", "Values": ["airflow-ami-base-debian-sid-*"]},
            {"Name": "root-device-type", "Values": ["ebs"]},
            {"Name": "virtualization-type", "Values": ["hvm"]},
            {"Name": "architecture", "Values": ["x86_64"]},
        ],
    )["Images"]
    assert [img["ImageId"] for img in found] == [cloud.base_ami_id("abc123")]
    assert moto.moto_has_image(moto_server["port"], "us-east-1", "ami-0aaaabbbbccccdddd")
    assert not moto.moto_has_image(moto_server["port"], "us-east-1", "ami-0123456789abcdef0")


@pytest.mark.slow  # a moto_server
def test_a_cluster_s_vpc_rules_open_the_api_port_the_image_was_baked_with_not_a_flag_s(
    moto_server: dict[str, int], tmp_path: Path, build_root: Path
) -> None:
    """Baked with --api-port 9090, launched without the flag: the members' security group
    (the VPC's rules between instances) opens 9090, not 8080 (the AWS twin is in
    test_aws_launch)."""
    tags = load(BakeSettings, cli={"cloud": "local", "api_port": "9090"}).ami_tags()
    launch = load(LaunchSettings, cli={"cloud": "local", "role": "controller", "cluster": "blue"})
    image = Baked.of(launch, "ami-9", lambda ami_id: tags)
    joined = cloud.membership(tmp_path, launch, image, moto_server["port"])
    cluster, ports = joined["cluster"], joined["sg_ports"]
    members = [{"slot": s, "ip": Slot(s).guest_ip, "cluster": cluster, "sg_ports": ports} for s in (0, 1)]
    (rule,) = (line for line in vpc.vpc_ruleset(members).splitlines() if "dport" in line)
    opened = {int(port) for port in rule.split("dport {")[1].split("}")[0].split(",")}
    assert 9090 in opened and 8080 not in opened


@pytest.mark.slow  # a moto_server
def test_a_scale_out_launches_what_the_group_s_template_holds_not_its_own_defaults(
    moto_server: dict[str, int], tmp_path: Path
) -> None:
    """The workers' user data (their concurrency, their task logs) is kept in the group's
    launch template when the group is made, as EC2 keeps it: `./bake scale`, which takes
    only --cluster and --workers, launches new workers from there."""
    port = moto_server["port"]
    launch = load(
        LaunchSettings, cli={"cloud": "local", "role": "worker", "cluster": "blue", "worker_concurrency": "4"}
    )
    group = autoscaling.worker_group_name("blue")
    assert cloud.group_user_data(port, launch.region, group) is None, "no group before its first worker"
    user_data = launch_user_data(launch, "worker", "s3://airflow-ami-blue-dags/dags", "10.213.0.2", group)
    cloud.worker_group(tmp_path, port, launch, "ami-0aaaabbbbccccdddd", user_data)
    kept = cloud.group_user_data(port, launch.region, group)
    assert kept == user_data and json.loads(kept)["worker_concurrency"] == 4


@pytest.mark.slow  # a moto_server
def test_moto_stops_for_good(tmp_path: Path) -> None:
    record = moto.start_moto(tmp_path / "moto.log", cloud.write_moto_amis(fake_cache(tmp_path)))
    system.stop_process(record["pid"])
    assert not moto.moto_is_running(record)


def test_reaper_recognises_our_processes_by_marker() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(30)"],
        env=system.marked_env(tag="imds:i-test"),
        start_new_session=True,
    )
    try:
        assert reaper.our_processes().get(proc.pid) == "imds:i-test"
    finally:
        system.stop_process(proc.pid)
    assert proc.pid not in reaper.our_processes()


@pytest.mark.slow  # a moto_server
def test_moto_serves_lifecycle_actions_and_teardown_removes_policy_hook_and_group(
    tmp_path: Path, moto_server: dict[str, int]
) -> None:
    settings = load(LaunchSettings, cli={"cloud": "local", "workers": "2"})
    with locked_state(tmp_path) as state:
        state["moto"] = moto_server
    group = cloud.worker_group(tmp_path, moto_server["port"], settings, cloud.base_ami_id("abc123"), "{}")
    asg = moto.moto_client("autoscaling", moto_server["port"], settings.region)
    assert asg.describe_lifecycle_hooks(AutoScalingGroupName=group)["LifecycleHooks"]
    assert asg.describe_policies(AutoScalingGroupName=group)["ScalingPolicies"]
    # moto_server runs with moto_lifecycle.py (motoserver.py): the call is AWS's, not "not implemented".
    with pytest.raises(botocore.exceptions.ClientError, match="No active Lifecycle Action found"):
        asg.complete_lifecycle_action(
            AutoScalingGroupName=group,
            LifecycleHookName=contract.LIFECYCLE_HOOK,
            InstanceId="i-0123456789abcdef0",
            LifecycleActionResult="CONTINUE",
        )
    assert cloud.remove_worker_groups(tmp_path) == [
        autoscaling.policy_name(group),
        f"{group} {contract.LIFECYCLE_HOOK}",
        group,
    ]
    assert asg.describe_auto_scaling_groups(AutoScalingGroupNames=[group])["AutoScalingGroups"] == []
    assert asg.describe_policies(AutoScalingGroupName=group)["ScalingPolicies"] == []
    assert asg.describe_lifecycle_hooks(AutoScalingGroupName=group)["LifecycleHooks"] == []
    with locked_state(tmp_path) as state:
        assert state["worker_groups"] == {}
