from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.client
import pytest
from moto import mock_aws

import airflow_ami.builddir

# Every AWS call a test made: (region, operation, params).
Calls = list[tuple[str, str, dict[str, Any]]]


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
    with mock_aws():
        yield calls
