"""Run the testinfra suite (tests/infra) against a host built from the image."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from airflow_ami.clouds import InstanceRecord
from airflow_ami.settings import REPO_ROOT

SUITE = REPO_ROOT / "tests" / "infra"


class UnknownHostKeys(RuntimeError):
    """An instance whose SSH host keys launch did not record: ssh would trust any."""


def ssh_config(path: Path, *instances: InstanceRecord) -> Path:
    """An ssh_config for launched instances: their keys, and their host keys as launch
    recorded them (known_hosts beside it), the only ones ssh accepts."""
    unknown = [i.instance_id for i in instances if not i.host_keys]
    if unknown:
        raise UnknownHostKeys(
            f"no SSH host keys recorded for {', '.join(unknown)} (its console had not printed them"
            " when it was launched, or it was launched before they were recorded): launch it again"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    known = path.with_name(path.name + ".known_hosts")
    known.write_text(
        "".join(
            f"{','.join(a for a in (i.address, i.deployment_address) if a)} {key}\n"
            for i in instances
            for key in i.host_keys
        )
    )
    path.write_text(
        "Host *\n"
        + "".join(f"  IdentityFile {i.ssh_key_file}\n" for i in instances if i.ssh_key_file)
        + "  IdentitiesOnly yes\n"
        "  StrictHostKeyChecking yes\n"
        f"  UserKnownHostsFile {known}\n"
        "  LogLevel ERROR\n"
        "  BatchMode yes\n"
        "  ConnectTimeout 10\n"
        "  ServerAliveInterval 5\n"
        "  ServerAliveCountMax 3\n"
    )
    return path


def suite_command(host: str, config: Path | None, pytest_args: Sequence[str]) -> list[str]:
    command = [sys.executable, "-m", "pytest", str(SUITE), f"--hosts={host}", "-p", "no:cacheprovider"]
    if config is not None:
        command.append(f"--ssh-config={config}")
    return [*command, *pytest_args]


def run_suite(host: str, config: Path | None = None, pytest_args: Sequence[str] = ()) -> int:
    """The suite's exit status (0: the host is correct)."""
    return subprocess.run(suite_command(host, config, pytest_args), cwd=REPO_ROOT, check=False).returncode
