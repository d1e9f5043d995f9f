"""What an image decided, read back for every launch step: from ami.json, else the AMI's tags."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_ami.builddir import BuildDir
from airflow_ami.image.record import Baked, NotOurImage
from airflow_ami.settings import RECORD, BakeSettings, LaunchSettings, load, tag_key

TARGET = {"cloud": "local"}


def nowhere(ami_id: str) -> dict[str, str]:
    raise AssertionError(f"{ami_id}'s tags were read though ami.json records it")


def test_the_build_s_record_answers_for_its_own_ami(build_root: Path) -> None:
    baked = load(BakeSettings, cli={**TARGET, "api_port": "9090", "api_tls": "self-signed"})
    bdir = BuildDir.of(baked)
    bdir.write(bdir.ami_record, {**baked.reaching(RECORD), "ami_id": "ami-1", "amis": {"eu-west-1": "ami-2"}})
    target = load(LaunchSettings, cli=TARGET)
    for ami_id in ("ami-1", "ami-2"):
        image = Baked.of(target, ami_id, nowhere)
        assert (image.api_port, image.api_tls, image.ssh_username) == (9090, "self-signed", "admin")
        assert image.api_url("10.0.0.1") == "https://10.0.0.1:9090"


def test_another_ami_answers_with_its_tags_parsed_as_the_bake_declares_them(build_root: Path) -> None:
    tags = load(BakeSettings, cli={**TARGET, "api_port": "9191", "admin_username": "ops"}).ami_tags()
    image = Baked.of(load(LaunchSettings, cli=TARGET), "ami-9", lambda ami_id: tags)
    assert (image.api_port, image.admin_username) == (9191, "ops")


def test_an_ami_without_the_bake_s_tags_is_refused_naming_them(build_root: Path) -> None:
    tags = load(BakeSettings, cli=TARGET).ami_tags()
    del tags[tag_key("api_port")]
    with pytest.raises(NotOurImage, match="lacks airflow-ami:api-port: ami-9 was not baked by this version"):
        Baked.of(load(LaunchSettings, cli=TARGET), "ami-9", lambda ami_id: tags)
