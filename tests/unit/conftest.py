from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.client
import pytest
from moto import mock_aws
from moto.ec2.responses import general as moto_general

import airflow_ami.builddir

# Every AWS call a test made: (region, operation, params).
Calls = list[tuple[str, str, dict[str, Any]]]
HOST_KEYS = (
    "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTY=",
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA==",
)
CONSOLE_WITH_HOST_KEYS = (
    "[    0.000000] Linux version 6.1\n"
    "-----BEGIN SSH HOST KEY KEYS-----\n"
    + "".join(f"{key} root@ip-10-0-0-5\n" for key in HOST_KEYS)
    + "-----END SSH HOST KEY KEYS-----\n"
)


@pytest.fixture
def build_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Render into a temporary build/ instead of the repository's."""
    root = tmp_path / "build"
    monkeypatch.setattr(airflow_ami.builddir, "BUILD_ROOT", root)
    yield root


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Calls]:
    """moto in-process, plus a record of every EC2 call (region, operation, params)."""
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    calls: Calls = []
    real = botocore.client.BaseClient._make_api_call

    def spy(self: Any, operation: str, params: dict[str, Any]) -> Any:
        calls.append((self.meta.region_name, operation, params))
        return real(self, operation, params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", spy)
    # Every moto instance's console shows the host keys cloud-init prints at boot.
    monkeypatch.setattr(moto_general, "SAMPLE_CONSOLE_OUTPUT", CONSOLE_WITH_HOST_KEYS)
    with mock_aws():
        yield calls
