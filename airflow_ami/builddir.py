"""build/<build-name>/: every path a build, a launch and a verify write or read there."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airflow_ami.settings import REPO_ROOT, Target

BUILD_ROOT = REPO_ROOT / "build"


class MissingRecord(RuntimeError):
    """A record an earlier step writes is not there; says which step to run."""


@dataclass(frozen=True)
class BuildDir:
    root: Path

    @classmethod
    def of(cls, settings: Target) -> BuildDir:
        return cls(BUILD_ROOT / settings.build_name)

    @property
    def template(self) -> Path:
        return self.root / "airflow.pkr.hcl"

    @property
    def bundle(self) -> Path:
        return self.root / "bundle"

    @property
    def manifest(self) -> Path:
        """Written by Packer's manifest post-processor."""
        return self.root / "manifest.json"

    @property
    def ami_record(self) -> Path:
        return self.root / "ami.json"

    @property
    def copied_regions_record(self) -> Path:
        """Every region copy-ami copied to (ami.json is rewritten by each bake; prune-amis looks here too)."""
        return self.root / "copied-regions.json"

    @property
    def instance_record(self) -> Path:
        return self.root / "instance.json"

    @property
    def cluster_record(self) -> Path:
        """The members of the cluster launched last: its controller and workers."""
        return self.root / "cluster.json"

    @property
    def upgrade_record(self) -> Path:
        """The last `./bake upgrade`: what replaced what, the rows checked, the downtime."""
        return self.root / "upgrade.json"

    @property
    def ssh_config(self) -> Path:
        return self.root / "ssh_config"

    def write(self, path: Path, record: dict[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    def read(self, path: Path, hint: str) -> dict[str, Any]:
        try:
            return dict(json.loads(path.read_text()))
        except FileNotFoundError:
            raise MissingRecord(f"no {path.name} at {path}: {hint}") from None
