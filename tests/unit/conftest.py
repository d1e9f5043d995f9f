from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import airflow_ami.builddir


@pytest.fixture
def build_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Render into a temporary build/ instead of the repository's."""
    root = tmp_path / "build"
    monkeypatch.setattr(airflow_ami.builddir, "BUILD_ROOT", root)
    yield root
