"""Reading Packer's manifest and recording the result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_ami.image.manifest import ManifestError, last_run_amis, publish_github_output


def write_manifest(path: Path, builds: list[dict[str, str]], last: str) -> Path:
    path.write_text(json.dumps({"builds": builds, "last_run_uuid": last}))
    return path


def test_the_last_run_wins_and_every_region_is_read(tmp_path: Path) -> None:
    manifest = write_manifest(
        tmp_path / "manifest.json",
        [
            {"artifact_id": "us-east-1:ami-0old", "packer_run_uuid": "run-1"},
            {"artifact_id": "us-east-1:ami-0new,eu-west-1:ami-0copy", "packer_run_uuid": "run-2"},
        ],
        "run-2",
    )
    assert last_run_amis(manifest) == {"us-east-1": "ami-0new", "eu-west-1": "ami-0copy"}


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ("{not json", "cannot read"),
        (json.dumps({"builds": [], "last_run_uuid": "x"}), "no build for its last run"),
        (
            json.dumps(
                {
                    "builds": [{"artifact_id": "us-east-1:snap-1", "packer_run_uuid": "x"}],
                    "last_run_uuid": "x",
                }
            ),
            "unexpected artifact",
        ),
    ],
)
def test_bad_manifests_are_reported(tmp_path: Path, content: str, why: str) -> None:
    path = tmp_path / "manifest.json"
    path.write_text(content)
    with pytest.raises(ManifestError, match=why):
        last_run_amis(path)


def test_missing_manifest_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="cannot read"):
        last_run_amis(tmp_path / "manifest.json")


def test_github_output_is_appended_only_when_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "github_output"
    out.write_text("earlier=1\n")
    monkeypatch.setenv("GITHUB_OUTPUT", str(out))
    publish_github_output("ami-0abc")
    assert out.read_text() == "earlier=1\nami_id=ami-0abc\n"
    monkeypatch.delenv("GITHUB_OUTPUT")
    publish_github_output("ami-0def")
    assert out.read_text() == "earlier=1\nami_id=ami-0abc\n"
