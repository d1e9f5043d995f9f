"""Whole programs in a dry run: every step runs or is described, nothing is run or written."""

import json

import provision
import pytest
from provfakes import RecordingContext, baked_settings, make_bundle, profile_facts
from provisioning.bake import imagecheck, install
from provisioning.bake.oskit import Apt, Dnf, Yum
from provisioning.boot import firstboot
from provisioning.shared import layout

ADAPTERS = {
    "debian": Apt({"ID": "debian", "VERSION_ID": "12", "VERSION_CODENAME": "bookworm"}),
    "amazon-linux-2023": Dnf({}),
    "amazon-linux-2": Yum({}),
}
SETTINGS = {
    "airflow_version": "3.3.2",
    "python_version": "auto",
    "mysql_version": "8.4",
    "extra_python_packages": [],
    "constraints_url": "",
    "constraints_file": "files/constraints.txt",
    "extra_ca_bundle": "",
    "os_mirror": "",
    "uv_version": "0.13.9",
    "uv_wheel_sha256": "0" * 64,
    "mysql_signing_key_fingerprint": "BCA43417C3B485DD128EC6D4B7B3B788A8D3785C",
}


@pytest.fixture
def bundle(tmp_path):
    files = make_bundle(tmp_path) / "files"
    (files / "constraints.txt").write_text("apache-airflow==3.3.2\n")
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "provision.py").write_text("# the entry\n")
    (tmp_path / "settings.json").write_text(json.dumps(baked_settings("debian", **SETTINGS)))
    return tmp_path


def dry_context(os_name, bundle):
    ctx = RecordingContext(SETTINGS, dry_run=True, os_name=os_name, adapter=ADAPTERS[os_name])
    ctx.bundle = str(bundle)
    return ctx


@pytest.mark.parametrize("os_name", sorted(ADAPTERS))
def test_install_dry_run_describes_every_change_and_makes_none(os_name, bundle, capsys):
    ctx = dry_context(os_name, bundle)
    assert install.main(ctx) == 0
    out = capsys.readouterr().out
    assert "!!!" not in out
    assert ctx.commands == [] and ctx.written == {} and ctx.removed == []
    assert [t["step"] for t in ctx.timings] == [step.__name__ for step in install.STEPS]
    for wanted in (
        "[dry-run] would install build-only packages",
        "[dry-run] would download the uv 0.13.9 wheel",
        "[dry-run] would drop anonymous users",
        "[dry-run] would run `airflow db migrate`",
        "[dry-run] would enable " + layout.AIRFLOW_TARGET,
        "[dry-run] would write " + profile_facts(os_name).mysql_dropin,
    ):
        assert wanted in out


@pytest.mark.parametrize("os_name", sorted(ADAPTERS))
def test_cleanup_and_validate_dry_run_change_nothing(os_name, bundle, capsys):
    ctx = dry_context(os_name, bundle)
    steps = [*imagecheck.CLEANUP_STEPS, imagecheck.validate_image]
    assert install.run_steps(ctx, steps, "cleanup") == 0
    assert "!!!" not in capsys.readouterr().out
    assert ctx.commands == [] and ctx.written == {} and ctx.removed == []


def test_firstboot_dry_run_only_lists_its_steps(bundle, capsys):
    ctx = dry_context("debian", bundle)
    assert firstboot.main(ctx) == 0
    out = capsys.readouterr().out
    assert ctx.state is None  # no step ran
    for step in firstboot.STEPS:
        assert f"[dry-run] would run first-boot step {step.__name__}" in out


def write_settings(bundle, **over):
    settings = json.loads((bundle / "settings.json").read_text())
    settings.update(over)
    (bundle / "settings.json").write_text(json.dumps(settings))


AL2023_RELEASE = 'ID="amzn"\nVERSION_ID="2023"\n'
BOOKWORM_RELEASE = 'ID=debian\nVERSION_ID="12"\nVERSION_CODENAME=bookworm\n'
UBUNTU_RELEASE = 'ID=ubuntu\nVERSION_ID="24.04"\nPRETTY_NAME="Ubuntu 24.04"\n'


def baking(bundle, dry_run, command="install"):
    return provision.argparse.Namespace(command=command, bundle=str(bundle), dry_run=dry_run)


def test_a_bake_step_checks_the_settings_os_against_the_detected_one(bundle, monkeypatch, capsys):
    write_settings(bundle, os="debian", os_facts=profile_facts("debian")._asdict())
    monkeypatch.setattr(provision, "read_os_release", lambda: AL2023_RELEASE)
    with pytest.raises(
        provision.UnsupportedOS, match="settings are for debian but this host runs amazon-linux-2023"
    ):
        provision.build_context(baking(bundle, dry_run=False))
    ctx = provision.build_context(baking(bundle, dry_run=True))
    assert "warning: settings are for debian but this host runs amazon-linux-2023" in capsys.readouterr().out
    assert ctx.facts == profile_facts("debian") and ctx.os.name == "apt"
    monkeypatch.setattr(provision, "read_os_release", lambda: BOOKWORM_RELEASE)
    assert provision.build_context(baking(bundle, dry_run=False)).os.name == "apt"


def test_a_dry_run_on_another_os_uses_the_adapter_the_facts_name(bundle, monkeypatch):
    write_settings(bundle, os="amazon-linux-2", os_facts=profile_facts("amazon-linux-2")._asdict())
    monkeypatch.setattr(provision, "read_os_release", lambda: UBUNTU_RELEASE)
    assert provision.build_context(baking(bundle, dry_run=True)).os.name == "yum"
    with pytest.raises(provision.UnsupportedOS, match=r"Ubuntu 24\.04"):
        provision.build_context(baking(bundle, dry_run=False))


@pytest.mark.parametrize("command", ["firstboot", "backup", "metrics", "refresh-secrets"])
def test_what_runs_after_the_bake_detects_no_os(bundle, monkeypatch, command):
    """First boot and the running instance's programs install nothing: the bake-time OS
    detection (and its UnsupportedOS) is not theirs to fail on."""
    monkeypatch.setattr(provision, "read_os_release", lambda: UBUNTU_RELEASE)
    assert provision.build_context(baking(bundle, dry_run=False, command=command)).os is None


def test_settings_that_lack_a_key_do_not_start_and_name_it(bundle, capsys):
    settings = json.loads((bundle / "settings.json").read_text())
    del settings["api_port"], settings["os_facts"]["mysql_socket"]
    (bundle / "settings.json").write_text(json.dumps(settings))
    assert provision.main(["install", "--bundle", str(bundle), "--dry-run"]) == 2
    out = capsys.readouterr().out
    assert "cannot start install: cannot read " in out
    assert "settings.json lacks api_port, os_facts.mysql_socket: it was rendered by another version" in out
