"""A real `packer build` of the rendered template against moto_server.

The build "instance" is a throwaway sshd on loopback that accepts the key pair
Packer creates in moto, and the provisioning runs in dry-run mode, so this
host is not changed. Proves the amazon-ebs flow end to end and that Packer
leaves no instance, key pair or security group behind.
"""

from __future__ import annotations

import getpass
import io
import json
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from airflow_ami.clouds.local.moto import aws_env, ec2_client, endpoint_url, free_port, start_moto
from airflow_ami.clouds.local.system import stop_process
from airflow_ami.image.build import build_ami
from airflow_ami.image.packer import PackerError
from airflow_ami.settings import BakeSettings, load

# A real packer build against moto_server: out of the fast loop (-m "not slow").
pytestmark = pytest.mark.slow

SSHD = Path("/usr/sbin/sshd")
REGION = "us-east-1"


@pytest.fixture
def moto_port(tmp_path: Path) -> Iterator[int]:
    server = start_moto(tmp_path / "moto.log")
    yield int(server["port"])
    stop_process(server["pid"])


@pytest.fixture
def ssh_target(tmp_path: Path) -> Iterator[int]:
    """sshd on a loopback port with its own host key that accepts any offered key.

    Packer logs in with the temporary key pair it created in moto, whose public
    half this sshd cannot know in advance, so the authorized-keys command
    echoes back whatever key is offered. Test-only; never part of an image.
    """
    assert SSHD.exists(), "sshd missing: ./bake installs openssh-server"
    # sshd refuses to start when its privilege-separation directory is group-writable,
    # as a umask of 002 makes it.
    Path("/run/sshd").mkdir(exist_ok=True)
    Path("/run/sshd").chmod(0o755)
    host_key = tmp_path / "ssh_host_ed25519_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
    port = free_port()
    config = tmp_path / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nPidFile {tmp_path}/sshd.pid\n"
        "AuthorizedKeysFile none\nAuthorizedKeysCommand /bin/echo %t %k\nAuthorizedKeysCommandUser nobody\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin yes\n"
        "StrictModes no\nSubsystem sftp internal-sftp\n"
    )
    log = tmp_path / "sshd.log"
    with log.open("w") as stderr:
        proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)], stderr=stderr)
    deadline = time.monotonic() + 10
    while proc.poll() is None and time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail(f"the test's sshd did not start: {log.read_text().strip()}")
    yield port
    proc.terminate()
    proc.wait(timeout=10)


def test_packer_build_against_moto_leaves_only_the_ami(
    moto_port: int, ssh_target: int, build_root: Path
) -> None:
    moto_endpoint = endpoint_url(moto_port)
    settings = replace(
        load(
            BakeSettings,
            cli={
                "region": REGION,
                "ec2_endpoint": moto_endpoint,
                "ssh_host": "127.0.0.1",
                # Else Packer asks checkip.amazonaws.com for this host's address.
                "ssh_cidrs": "127.0.0.1/32",
                "ssh_port": str(ssh_target),
                "ssh_username": getpass.getuser(),
                "tags": "Team=data",
                "dry_run": "true",
            },
        ),
        build_name="moto-build",
    )
    env = aws_env(REGION, moto_endpoint)
    out = io.StringIO()
    try:
        record = build_ami(settings, env=env, out=out)
    except PackerError:
        pytest.fail(f"packer build failed; the end of its output:\n{out.getvalue()[-6000:]}")
    log = out.getvalue()

    ec2 = ec2_client(moto_port, REGION)
    # The AMI is registered under the rendered name, from the AL2 image the filter picks.
    image = ec2.describe_images(ImageIds=[record["ami_id"]])["Images"][0]
    assert image["Name"] == record["name"]
    assert image["Name"].startswith("airflow-3.3.2-amazon-linux-2-x86_64-")
    source = ec2.describe_images(ImageIds=[record["source_ami"]])["Images"][0]
    assert source["OwnerId"] == "137112412989" and source["Name"].startswith("amzn2-ami-kernel-5.10-hvm-2.0.")
    tags = {t["Key"]: t["Value"] for t in image.get("Tags", [])}
    assert tags["Team"] == "data" and tags["airflow-ami:airflow-version"] == "3.3.2"
    # Packer's own cleanup: no running instance, temporary key pair or security group remains.
    states = [i["State"]["Name"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]
    assert states and set(states) == {"terminated"}
    assert ec2.describe_key_pairs()["KeyPairs"] == []
    groups = [g["GroupName"] for g in ec2.describe_security_groups()["SecurityGroups"]]
    assert groups == ["default"]
    # The record, the manifest and the provisioning dry run.
    written = json.loads((build_root / "moto-build" / "ami.json").read_text())
    assert written == record
    assert record["region"] == REGION and record["amis"] == {REGION: record["ami_id"]}
    assert len(record["template_sha256"]) == 64 and record["imds_support"] == "v2.0"
    assert "--- phase: Launching a source AWS instance" in log
    assert "dry-run" in log.lower()
