"""Instances: systemd-nspawn containers booted from a copy of an image, one netns each."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from airflow_ami.clouds.local import cgroups, supervise
from airflow_ami.clouds.local import imds as imds_module
from airflow_ami.clouds.local.moto import FAKE_AWS_ENV, MOTO_ACCOUNT_ID
from airflow_ami.clouds.local.network import (
    Slot,
    create_network,
    destroy_network,
    enable_ip_forward,
    free_slot,
    instance_resolv_conf,
    plan_dns,
    restore_ip_forward,
)
from airflow_ami.clouds.local.state import locked_state
from airflow_ami.clouds.local.system import (
    MARKER_ENV,
    PREFIX,
    LocalCloudError,
    log,
    marked_env,
    pid_alive,
    run,
    safe_rmtree,
    stop_process,
)
from airflow_ami.clouds.local.vpc import apply_vpc, security_group_ports

# A rootfs with systemd >= 256 refuses the host's hybrid cgroup layout otherwise.
NSPAWN_ENV = {"SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"}
# What a local instance is: this host's CPUs, and the type's memory as a hard limit (cgroups.py).
INSTANCE_TYPE = "t3.large"
INSTANCE_MEMORY = 8 << 30
# Every local instance has this instance profile; its keys are moto's fake ones.
INSTANCE_ROLE = "airflow-ami-local"
KEEP_LOGS = 40
DISCARD_TIMEOUT = 15


def new_instance_id() -> str:
    return "i-" + secrets.token_hex(9)[:17]


def instances_dir(cache: Path) -> Path:
    return cache / "instances"


def machine_name(instance_id: str) -> str:
    return f"{PREFIX}{instance_id}"


def hostname_for(ip: str) -> str:
    return "ip-" + ip.replace(".", "-")


def copy_image(image: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Reflinks where the filesystem has them, a plain copy elsewhere: no mounts to undo.
    run(["cp", "-a", "--reflink=auto", str(image), str(dest)], timeout=1800)


def prepare_rootfs(rootfs: Path, slot: Slot, nameservers: list[str], dnat_to: str | None) -> None:
    hostname = hostname_for(slot.guest_ip)
    hosts = f"127.0.0.1 localhost\n::1 localhost\n{slot.guest_ip} {hostname}\n"
    resolv = rootfs / "etc/resolv.conf"
    if resolv.is_symlink() or resolv.exists():
        resolv.unlink()
    for path, text in (
        (rootfs / "etc/hostname", hostname + "\n"),
        (rootfs / "etc/hosts", hosts),
        (resolv, instance_resolv_conf(slot, nameservers, dnat_to)),
    ):
        path.write_text(text)
        # Whatever our umask: apt resolves names as its _apt user, which a 600 file shuts out.
        path.chmod(0o644)


def lifecycle_state_path(record: dict[str, Any]) -> Path:
    return Path(record["home"]) / imds_module.LIFECYCLE_STATE_FILE


def set_lifecycle_state(record: dict[str, Any], state: str) -> None:
    """What a member of an Auto Scaling group reads from IMDS as its target lifecycle state."""
    imds_module.write_lifecycle_state(lifecycle_state_path(record), state)


def imds_document(record: dict[str, Any], region: str, public_key: str) -> dict[str, Any]:
    return {
        "instance_id": record["instance_id"],
        "ami_id": record["ami_id"],
        "instance_type": INSTANCE_TYPE,
        "private_ip": record["ip"],
        "hostname": hostname_for(record["ip"]),
        "region": region,
        "availability_zone": f"{region}a",
        "account_id": MOTO_ACCOUNT_ID,
        "public_key": public_key,
        "user_data": record.get("user_data", ""),
        # "": not a member of an Auto Scaling group (no autoscaling/ path, as on EC2).
        "lifecycle_state_file": str(lifecycle_state_path(record)) if record["autoscaling_group"] else "",
        "role": {
            "name": INSTANCE_ROLE,
            "profile_arn": f"arn:aws:iam::{MOTO_ACCOUNT_ID}:instance-profile/{INSTANCE_ROLE}",
            "credentials": {
                "Code": "Success",
                "Type": "AWS-HMAC",
                "AccessKeyId": FAKE_AWS_ENV["AWS_ACCESS_KEY_ID"],
                "SecretAccessKey": FAKE_AWS_ENV["AWS_SECRET_ACCESS_KEY"],
                "Token": FAKE_AWS_ENV["AWS_SESSION_TOKEN"],
                "Expiration": "2099-01-01T00:00:00Z",
            },
        },
    }


def start_imds(slot: Slot, config: Path, log_file: Path, instance_id: str) -> int:
    with open(log_file, "ab") as out:
        proc = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                slot.netns,
                sys.executable,
                "-I",
                imds_module.__file__,
                "--config",
                str(config),
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=marked_env(tag=f"imds:{instance_id}"),
            start_new_session=True,
        )
    _wait_for_log_line(proc, log_file, "imds: serving", 15, "metadata service")
    return proc.pid


def start_nspawn(rootfs: Path, slot: Slot, instance_id: str, log_file: Path, cpu_quota: int = 0) -> int:
    cmd = [
        "systemd-nspawn",
        "--boot",
        "--quiet",
        f"--directory={rootfs}",
        f"--machine={machine_name(instance_id)}",
        f"--hostname={hostname_for(slot.guest_ip)}",
        f"--network-namespace-path=/run/netns/{slot.netns}",
        "--register=no",
        # No systemd on the host to hand us a scope unit: stay in our own cgroup.
        "--keep-unit",
        "--resolv-conf=off",
        "--timezone=off",
        "--link-journal=no",
        "--console=read-only",
        # Marks the container's init for the reaper: its services do not inherit it.
        f"--setenv={MARKER_ENV}=init:{instance_id}",
    ]
    cgroup_args = [
        arg
        for cgroup in cgroups.create(machine_name(instance_id), INSTANCE_MEMORY, cpu_quota)
        for arg in ("--cgroup", str(cgroup))
    ]
    with open(log_file, "ab") as out:
        # Own session: a terminal Ctrl-C reaches our handlers, which shut it down in order.
        proc = subprocess.Popen(
            [sys.executable, "-I", supervise.__file__, *cgroup_args, *cmd],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=marked_env(NSPAWN_ENV, tag=f"nspawn:{instance_id}"),
            start_new_session=True,
        )
    time.sleep(0.5)
    if proc.poll() is not None:
        raise LocalCloudError(
            f"systemd-nspawn exited at once (status {proc.returncode}); "
            f"see {kept_log(log_file.parent, log_file.name)}"
        )
    return proc.pid


def _wait_for_log_line(
    proc: subprocess.Popen[bytes], log_file: Path, needle: str, timeout: float, what: str
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if needle in log_file.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise LocalCloudError(f"the {what} did not start; see {kept_log(log_file.parent, log_file.name)}")


def boot_instance(
    cache: Path,
    image: Path,
    *,
    ami_id: str,
    region: str,
    public_key: str,
    ssh_user: str,
    ssh_key_file: str,
    aws_api_port: int,
    instance_id: str | None = None,
    owner_pid: int | None = None,
    cluster: str | None = None,
    sg_ports: Iterable[int] = (),
    role: str = "standalone",
    user_data: str = "",
    deployment: str = "",
    autoscaling_group: str = "",
    cpu_quota: int = 0,
) -> dict[str, Any]:
    """Boot a container from a copy of `image`; returns its state record.

    aws_api_port: moto's port, which the instance reaches as network.AWS_API_URL.

    owner_pid: the process whose exit makes the instance stale (build
    instances); None for launched instances, which outlive the command.

    cluster, sg_ports: the cluster the instance belongs to (None: alone) and
    the TCP ports its security group opens to the other members (vpc.py).
    role, user_data: what it is launched as, and the user data IMDS serves it.
    autoscaling_group: the group it is to join (cloud.py attaches it once it is up): IMDS
    serves it its target lifecycle state, InService from the start.
    cpu_quota: percent of one CPU the instance may use (0: the host's CPUs; cgroups.py).
    """
    instance_id = instance_id or new_instance_id()
    ports = security_group_ports(cluster, sg_ports)
    nameservers, dnat_to = plan_dns()
    home = instances_dir(cache) / instance_id
    with locked_state(cache) as state:
        slot = free_slot({rec["slot"] for rec in state["instances"].values()})
        record = {
            "instance_id": instance_id,
            "ami_id": ami_id,
            "slot": slot.index,
            "ip": slot.guest_ip,
            "machine": machine_name(instance_id),
            "home": str(home),
            "ssh_user": ssh_user,
            "ssh_key_file": ssh_key_file,
            "owner_pid": owner_pid,
            "cluster": cluster,
            "sg_ports": ports,
            "role": role,
            "user_data": user_data,
            "deployment": deployment,
            "autoscaling_group": autoscaling_group,
            "cpu_quota": cpu_quota,
            "nspawn_pid": None,
            "init_pid": None,
            "imds_pid": None,
            "started": time.time(),
        }
        # Recorded before anything exists, so a crash mid-way is still cleaned up.
        state["instances"][instance_id] = record
        if state["ip_forward_before"] is None:
            state["ip_forward_before"] = enable_ip_forward()
        else:
            enable_ip_forward()
    try:
        started = time.monotonic()
        with locked_state(cache) as state:
            # Under the lock: a concurrent boot or removal cannot write the table from stale records.
            apply_vpc(state["instances"].values())
        copy_image(image, home / "rootfs")
        prepare_rootfs(home / "rootfs", slot, nameservers, dnat_to)
        create_network(slot, dnat_to, aws_api_port)
        config = home / "imds.json"
        config.write_text(json.dumps(imds_document(record, region, public_key), indent=2))
        if autoscaling_group:
            set_lifecycle_state(record, "InService")
        record["imds_pid"] = start_imds(slot, config, home / "imds.log", instance_id)
        update_record(cache, record)
        record["nspawn_pid"] = start_nspawn(
            home / "rootfs", slot, instance_id, home / "console.log", cpu_quota
        )
        update_record(cache, record)
        record["init_pid"] = container_init_pid(record["nspawn_pid"])
        update_record(cache, record)
        log.info(
            "instance %s booting at %s (prepared in %.1fs)",
            instance_id,
            slot.guest_ip,
            time.monotonic() - started,
        )
    except BaseException:
        destroy_instance(cache, record)
        raise
    return record


def read_host_keys(rootfs: Path) -> list[str]:
    """The instance's SSH host keys ("TYPE BASE64"), from its own files: the local cloud's
    stand-in for the keys cloud-init prints to an EC2 instance's console."""
    return sorted(
        " ".join(p.read_text().split()[:2]) for p in (rootfs / "etc/ssh").glob("ssh_host_*_key.pub")
    )


def update_record(cache: Path, record: dict[str, Any]) -> None:
    with locked_state(cache) as state:
        state["instances"][record["instance_id"]] = record


def set_metadata_service(cache: Path, record: dict[str, Any], running: bool) -> None:
    """Stop or (re)start one instance's metadata service: rehearses an IMDS outage."""
    if record.get("imds_pid"):
        stop_process(record["imds_pid"])
        record["imds_pid"] = None
    if running:
        home = Path(record["home"])
        slot = Slot(record["slot"])
        record["imds_pid"] = start_imds(slot, home / "imds.json", home / "imds.log", record["instance_id"])
    update_record(cache, record)


def ssh_command(record: dict[str, Any], *remote: str) -> list[str]:
    return [
        "ssh",
        "-i",
        record["ssh_key_file"],
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "ConnectTimeout=5",
        "-o",
        "LogLevel=ERROR",
        f"{record['ssh_user']}@{record['ip']}",
        *remote,
    ]


def wait_for_ssh(record: dict[str, Any], timeout: float = 180) -> float:
    """Block until `ssh user@ip true` works; returns the seconds it took."""
    started = time.monotonic()
    deadline = started + timeout
    while time.monotonic() < deadline:
        if not pid_alive(record["nspawn_pid"]):
            raise LocalCloudError(
                f"instance {record['instance_id']} stopped while booting; "
                f"see {kept_log(Path(record['home']), 'console.log')}"
            )
        proc = subprocess.run(
            ssh_command(record, "true"),
            capture_output=True,
            stdin=subprocess.DEVNULL,
            check=False,
            timeout=30,
        )
        if proc.returncode == 0:
            return time.monotonic() - started
        time.sleep(1)
    raise LocalCloudError(
        f"no SSH on {record['ip']} after {timeout:.0f}s; see {kept_log(Path(record['home']), 'console.log')}"
    )


def shutdown_instance(record: dict[str, Any], timeout: float = 90) -> None:
    """Orderly poweroff: nspawn turns SIGTERM into SIGRTMIN+3 for the container's systemd.

    If that takes longer than timeout, the container's init is killed too:
    killing nspawn alone leaves the container's processes running.
    """
    pid = record.get("nspawn_pid")
    # Looked up now: a reboot inside the instance gives it a new init.
    init = container_init_pid(pid, timeout=0) if pid and pid_alive(pid) else record.get("init_pid")
    if pid and pid_alive(pid):
        log.info("powering off instance %s", record["instance_id"])
        stop_process(pid, timeout=timeout, sig=signal.SIGTERM)
    if init and is_container_init(init):
        # SIGKILL to a PID namespace's init ends every process in the namespace.
        stop_process_now(init)


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def container_init_pid(supervisor_pid: int, timeout: float = 10) -> int | None:
    """The container's PID 1 as the host sees it: the PID-namespace init below supervise -> nspawn."""
    deadline = time.monotonic() + timeout
    while True:
        for nspawn in _children(supervisor_pid):
            for child in _children(nspawn):
                if is_container_init(child):
                    return child
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.1)


def is_container_init(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    nspid = next((line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:")), [])
    return len(nspid) >= 2 and nspid[-1] == "1"


def stop_process_now(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)


def kept_log(home: Path, name: str) -> Path:
    """Where an instance's log survives its removal: <cache>/logs/<instance id>-<name>."""
    return home.parent.parent / "logs" / f"{home.name}-{name}"


def keep_logs(home: Path) -> None:
    # They explain a failed boot after cleanup has removed the instance.
    for name in ("console.log", "imds.log"):
        if (home / name).exists():
            kept_log(home, name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(home / name, kept_log(home, name))
    kept = sorted(kept_log(home, "x").parent.glob("*.log"), key=lambda p: p.stat().st_mtime)
    for old in kept[:-KEEP_LOGS]:
        old.unlink(missing_ok=True)


def destroy_instance(cache: Path, record: dict[str, Any]) -> None:
    """Stop and remove everything of one instance, in any state it may be in."""
    # Its disk is thrown away: no reason to wait long for slow service stops.
    shutdown_instance(record, timeout=DISCARD_TIMEOUT)
    if record.get("imds_pid"):
        stop_process(record["imds_pid"])
    destroy_network(Slot(record["slot"]))
    cgroups.remove_instance(record["machine"])
    keep_logs(Path(record["home"]))
    safe_rmtree(Path(record["home"]))
    with locked_state(cache) as state:
        state["instances"].pop(record["instance_id"], None)
        apply_vpc(state["instances"].values())
        if not state["instances"]:
            restore_ip_forward(state["ip_forward_before"])
            state["ip_forward_before"] = None
