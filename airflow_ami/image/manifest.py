"""Reading Packer's manifest and recording the AMI (ami.json, $GITHUB_OUTPUT)."""

from __future__ import annotations

import json
import os
from pathlib import Path


class ManifestError(ValueError):
    """The manifest is missing, malformed or has no AMI for the last run."""


def last_run_amis(manifest_path: Path) -> dict[str, str]:
    """{region: ami_id} of the manifest's last run (artifact "r1:ami-1,r2:ami-2")."""
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        raise ManifestError(f"cannot read {manifest_path}: {exc}") from None
    last = manifest.get("last_run_uuid")
    builds = [b for b in manifest.get("builds", []) if b.get("packer_run_uuid") == last]
    if not builds:
        raise ManifestError(f"{manifest_path} has no build for its last run {last!r}")
    amis: dict[str, str] = {}
    for artifact in builds[-1].get("artifact_id", "").split(","):
        region, sep, ami_id = artifact.partition(":")
        if not sep or not ami_id.startswith("ami-"):
            raise ManifestError(f"unexpected artifact {artifact!r} in {manifest_path}")
        amis[region] = ami_id
    return amis


def publish_github_output(ami_id: str) -> None:
    """Append ami_id=... to $GITHUB_OUTPUT when running in GitHub Actions."""
    target = os.environ.get("GITHUB_OUTPUT")
    if target:
        with open(target, "a", encoding="utf-8") as fh:
            fh.write(f"ami_id={ami_id}\n")
