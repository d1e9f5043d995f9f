"""The local-cloud rehearsal, end to end. Runs in CI (as root); never skips.

A missing prerequisite fails loudly: a skipped e2e would hide a broken image.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from airflow_ami.clouds import InstanceRecord
from airflow_ami.driver.instance import Instance

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "build" / "debian-x86_64-local"
REQUIRED_COMMANDS = ("packer", "systemd-nspawn", "mmdebstrap", "nft", "ip", "ssh")
MARKER_ENV = b"AIRFLOW_AMI_LOCALCLOUD="


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The e2e runs last: unit failures are cheaper to learn about first. Each e2e test is
    marked e2e and slow, so `-m "not slow"` (the fast loop) leaves them out."""
    for item in items:
        if "tests/e2e/" in str(item.path):
            item.add_marker(pytest.mark.e2e)
            item.add_marker(pytest.mark.slow)
    items.sort(key=lambda item: "tests/e2e/" in str(item.path))


@pytest.fixture(scope="session", autouse=True)
def prerequisites() -> None:
    if os.geteuid() != 0:
        pytest.fail("the e2e rehearsal needs root (network namespaces, nftables, systemd-nspawn)")
    missing = [c for c in REQUIRED_COMMANDS if shutil.which(c) is None]
    if missing:
        pytest.fail(
            f"the e2e rehearsal needs {', '.join(missing)}: run it through ./bake, which installs them"
        )


def our_leftovers() -> list[str]:
    """Anything of the local cloud still on this host, looked up independently of its own code."""
    found = []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    found += [f"netns {line.split()[0]}" for line in netns.splitlines() if line.startswith("aa-")]
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    found += [f"link {line.split(':')[1].strip()}" for line in links.splitlines() if ": aa-" in line]
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True).stdout
    found += [f"nft {line}" for line in tables.splitlines() if " aa_" in line]
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            environ = (proc / "environ").read_bytes()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if MARKER_ENV in environ or ("systemd-nspawn" in cmdline and "aa-" in cmdline):
            found.append(f"process {proc.name}: {cmdline.strip()[:120]}")
    return found


def driven(launched: InstanceRecord) -> Instance:
    """The instance driver (airflow_ami/driver) on a launched instance."""
    return Instance.of(launched, BUILD / f"ssh_config-{launched.instance_id}")


def bake(*args: str, timeout: float = 3600) -> subprocess.CompletedProcess[str]:
    """./bake with output kept (printed by pytest on failure)."""
    result = subprocess.run(
        ["./bake", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
    )
    print(f"$ ./bake {' '.join(args)}\n{result.stdout}\n{result.stderr}")
    return result


def identity(host: Any, timeout: float = 300) -> dict[str, str]:
    """What must be unique per instance: machine-id, MySQL server UUID, a digest per secret."""
    deadline = time.monotonic() + timeout
    while host.run("sudo -n systemctl is-active airflow-firstboot.service").stdout.strip() != "active":
        assert time.monotonic() < deadline, "first boot did not finish; journalctl -u airflow-firstboot"
        time.sleep(3)
    # Digests only: secret values never leave the instance.
    digests = host.check_output(
        'sudo -n sh -c \'grep -v "^#" /etc/airflow/secrets.env | while IFS== read -r key value; do '
        'printf "%s %s\\n" "$key" "$(printf %s "$value" | sha256sum | cut -c1-64)"; '
        'done; printf "admin-password %s\\n" $(sha256sum < /etc/airflow/admin-password | cut -c1-64)\''
    )
    found = {f"secret {line.split()[0]}": line.split()[1] for line in digests.splitlines() if line.strip()}
    found["machine-id"] = host.file("/etc/machine-id").content_string.strip()
    found["mysql server_uuid"] = host.check_output("sudo -n mysql -NBe 'SELECT @@server_uuid'")
    return found
