"""Run the testinfra suite (tests/infra) against a host built from the image."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from airflow_ami.settings import REPO_ROOT

SUITE = REPO_ROOT / "tests" / "infra"


def ssh_config(path: Path, *identity_files: str) -> Path:
    """An ssh_config for throwaway instances: their host keys are new on every launch."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "Host *\n"
        + "".join(f"  IdentityFile {identity}\n" for identity in identity_files)
        + "  IdentitiesOnly yes\n"
        "  StrictHostKeyChecking no\n"
        "  UserKnownHostsFile /dev/null\n"
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
