"""moto_server as the local cloud's AWS APIs: start on a free loopback port, probe, stop.

It is moto's own server with what the local cloud adds to moto loaded first (motoserver.py:
Auto Scaling's lifecycle hooks, moto_lifecycle.py).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions

from airflow_ami.clouds.local.system import LocalCloudError, log, marked_env, pid_alive, stop_process

MOTO_ACCOUNT_ID = "123456789012"
# moto_server with the local cloud's additions (named, not imported: the server's imports are
# its own process's).
MOTO_SERVER_MODULE = "airflow_ami.clouds.local.motoserver"
PACKAGE_ROOT = Path(__file__).resolve().parents[3]
# Fake credentials: the local cloud must never reach real AWS, even if the
# caller's environment holds real keys or a profile.
FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def aws_env(region: str, endpoint: str) -> dict[str, str]:
    """Environment for any AWS client (boto3, Packer) aimed at moto."""
    env = {k: v for k, v in os.environ.items() if k != "AWS_PROFILE"}
    env.update(FAKE_AWS_ENV)
    env["AWS_DEFAULT_REGION"] = region
    env["AWS_REGION"] = region
    env["AWS_ENDPOINT_URL_EC2"] = endpoint
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def endpoint_url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def moto_answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint_url(port)}/moto-api/", timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start_moto(log_file: Path, amis_file: Path | None = None, timeout: float = 30) -> dict[str, Any]:
    """Start moto_server detached (it outlives this process); returns {pid, port}.

    amis_file (MOTO_AMIS_PATH) replaces moto's stock AMIs with ours: AMIs made
    through the API come out with root device type "standard", which a
    `root-device-type = ebs` source filter never finds. Without it moto lists
    its stock AMIs (Amazon Linux 2 / 2023 with their real names and owner).
    """
    amis_env = {"MOTO_AMIS_PATH": str(amis_file)} if amis_file else {}
    # The package on the server's import path, wherever this process runs from.
    path = os.pathsep.join(p for p in (str(PACKAGE_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    port = free_port()
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as out:
        # New session: a Ctrl-C in the terminal must not kill it behind our back;
        # our own cleanup decides when it stops.
        proc = subprocess.Popen(
            [sys.executable, "-m", MOTO_SERVER_MODULE, "-H", "127.0.0.1", "-p", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=marked_env({**FAKE_AWS_ENV, **amis_env, "PYTHONPATH": path}, tag="moto"),
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LocalCloudError(f"moto_server exited at start (status {proc.returncode}); see {log_file}")
        if moto_answers(port):
            log.info("moto_server up on port %d (pid %d)", port, proc.pid)
            return {"pid": proc.pid, "port": port}
        time.sleep(0.2)
    stop_process(proc.pid)
    raise LocalCloudError(f"moto_server did not answer within {timeout:.0f}s; see {log_file}")


def moto_ami_entry(
    ami_id: str, name: str, description: str, created: float, tags: dict[str, str] | None = None
) -> dict[str, Any]:
    """One AMI as moto's MOTO_AMIS_PATH file describes it (EBS-backed, HVM, ours), with the
    tags it had, so they outlive a moto restart as an AMI's tags outlive anything on EC2."""
    return {
        "tags": dict(tags or {}),
        "ami_id": ami_id,
        "name": name,
        "description": description,
        "owner_id": MOTO_ACCOUNT_ID,
        "public": False,
        "virtualization_type": "hvm",
        "architecture": "x86_64",
        "state": "available",
        "image_type": "machine",
        "hypervisor": "xen",
        "root_device_type": "ebs",
        "root_device_name": "/dev/xvda",
        "sriov": "simple",
        "creation_date": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(created)),
    }


def moto_has_image(port: int, region: str, ami_id: str) -> bool:
    try:
        ec2_client(port, region).describe_images(ImageIds=[ami_id])
    except botocore.exceptions.ClientError:
        return False
    return True


def moto_is_running(record: dict[str, Any] | None) -> bool:
    return bool(record) and pid_alive(record["pid"]) and moto_answers(record["port"])


def ec2_client(port: int, region: str) -> Any:
    return moto_client("ec2", port, region)


def moto_client(service: str, port: int, region: str) -> Any:
    """A boto3 client of any AWS service moto plays, with the fake keys."""
    return boto3.client(
        service,
        region_name=region,
        endpoint_url=endpoint_url(port),
        aws_access_key_id=FAKE_AWS_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=FAKE_AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=FAKE_AWS_ENV["AWS_SESSION_TOKEN"],
    )
