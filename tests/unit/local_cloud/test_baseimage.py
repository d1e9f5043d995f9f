from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from airflow_ami.clouds.local import baseimage
from airflow_ami.clouds.local.baseimage import Recipe


def test_recipe_hash_is_stable_and_tracks_the_recipe(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("one")
    recipe = Recipe()
    assert baseimage.recipe_hash(recipe, ca) == baseimage.recipe_hash(Recipe(), ca)
    more = dataclasses.replace(recipe, packages=(*recipe.packages, "vim"))
    assert baseimage.recipe_hash(more, ca) != baseimage.recipe_hash(recipe, ca)
    ca.write_text("two")
    assert baseimage.recipe_hash(recipe, ca) != baseimage.recipe_hash(Recipe(), tmp_path / "x")


def test_recipe_has_what_an_instance_needs() -> None:
    packages = set(Recipe().packages)
    for needed in (
        "systemd-sysv",
        "openssh-server",
        "openssh-client",
        "python3",
        "sudo",
        "ca-certificates",
        "iproute2",
        "passwd",
        "mount",
    ):
        assert needed in packages


def test_mmdebstrap_tolerates_the_stale_sid_release(tmp_path: Path) -> None:
    cmd = baseimage.mmdebstrap_command(Recipe(), tmp_path / "rootfs")
    assert '--aptopt=Acquire::Check-Valid-Until "false"' in cmd
    assert cmd[-2:] == ["sid", str(tmp_path / "rootfs")]  # no mirror: mmdebstrap's default


def test_instances_apt_also_tolerates_it() -> None:
    files = Recipe().files
    assert "Check-Valid-Until" in files["etc/apt/apt.conf.d/99localcloud-no-valid-until"]
    assert files["etc/sudoers.d/90-admin"] == "admin ALL=(ALL) NOPASSWD:ALL\n"


def test_init_script_is_valid_python() -> None:
    script = Recipe().files["usr/local/sbin/localcloud-init"]
    compile(script, "localcloud-init", "exec")
    assert 'USER = "admin"' in script


def test_init_unit_runs_before_sshd() -> None:
    unit = Recipe().files["etc/systemd/system/localcloud-init.service"]
    assert "Before=ssh.service" in unit


def test_prune_keeps_the_most_recently_used(tmp_path: Path) -> None:
    for age, name in enumerate(["new", "mid", "old"]):
        (tmp_path / name).mkdir()
        stamp = 1_000_000 - age * 100
        os.utime(tmp_path / name, (stamp, stamp))
    (tmp_path / ".build-x-1").mkdir()
    removed = baseimage.prune_images(tmp_path, keep=2)
    assert [p.name for p in removed] == ["old"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".build-x-1", "mid", "new"]
