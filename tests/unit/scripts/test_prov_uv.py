"""uv is unpacked only from a wheel with the pinned sha256."""

import hashlib
import io
import os
import zipfile

import pytest
from provfakes import RecordingContext
from provisioning.bake import install
from provisioning.shared import layout
from provisioning.shared.runner import StepFailed

WHEEL = "uv-0.13.9-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"


def wheel_bytes():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        entry = zipfile.ZipInfo("uv-0.13.9.data/scripts/uv", date_time=(2026, 1, 1, 0, 0, 0))
        zf.writestr(entry, "#!/bin/sh\necho uv 0.13.9\n")
    return buf.getvalue()


WHEEL_SHA256 = hashlib.sha256(wheel_bytes()).hexdigest()


class NothingMissing:
    venv_packages = ("python3-venv",)

    def missing(self, ctx, packages):
        return []


def pip_and_uv(argv):
    """pip download writes the wheel into --dest; uv --version answers."""
    if "download" in argv:
        dest = argv[argv.index("--dest") + 1]
        os.makedirs(dest)
        with open(os.path.join(dest, WHEEL), "wb") as fh:
            fh.write(wheel_bytes())
    if argv[-1] == "--version":
        return 0, "uv 0.13.9\n"
    return 0, ""


@pytest.fixture
def build_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(layout, "BUILD_DIR", str(tmp_path))
    return tmp_path


def make_ctx(pinned_sha256):
    ctx = RecordingContext(
        {"uv_version": "0.13.9", "uv_wheel_sha256": pinned_sha256}, adapter=NothingMissing()
    )
    ctx.run_output = pip_and_uv
    return ctx


def test_a_wheel_with_another_hash_stops_the_step_and_nothing_is_unpacked(build_dir):
    ctx = make_ctx("ab" * 32)
    with pytest.raises(StepFailed) as err:
        install.install_uv(ctx)
    assert str(err.value) == (
        f"{WHEEL} has sha256 {WHEEL_SHA256}, but uv_wheel_sha256 is {'ab' * 32}: nothing was unpacked; "
        "give uv_wheel_sha256 of uv_version's wheel (the defaults: airflow_ami/settings/bake.py)"
    )
    assert not os.path.exists(install.uv_bin())
    assert os.listdir(build_dir) == []  # nor is the download left behind
    assert any("uv==0.13.9" in argv for argv in ctx.commands)


def test_the_pinned_wheel_is_unpacked(build_dir):
    ctx = make_ctx(WHEEL_SHA256.upper())  # the pin is case-insensitive
    install.install_uv(ctx)
    assert os.access(install.uv_bin(), os.X_OK)
    assert os.listdir(build_dir) == ["uv"]
    assert ctx.commands[-1] == [install.uv_bin(), "--version"]
    assert ctx.changed


def test_a_dry_run_downloads_nothing(build_dir, capsys):
    ctx = make_ctx(WHEEL_SHA256)
    ctx.dry_run = True
    install.install_uv(ctx)
    assert ctx.commands == []
    assert os.listdir(build_dir) == []
    assert "[dry-run] would download the uv 0.13.9 wheel" in capsys.readouterr().out
