"""What a step hands to a later one is declared, with its default, by the program's state class."""

import ast
from pathlib import Path

import pytest
from provfakes import RecordingContext
from provisioning.bake import install
from provisioning.boot import firstboot
from provisioning.shared.awsapi import NoMetadata

PROVISIONING = Path(__file__).resolve().parents[3] / "scripts" / "provisioning"


def state_attributes_used(module):
    """Every NAME in ``ctx.state.NAME`` or ``state.NAME`` in the module's source."""
    (path,) = PROVISIONING.rglob(f"{module}.py")
    tree = ast.parse(path.read_text())
    used = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        owner = node.value
        if (isinstance(owner, ast.Attribute) and owner.attr == "state") or (
            isinstance(owner, ast.Name) and owner.id == "state"
        ):
            used.add(node.attr)
    return used


def test_install_state_defaults():
    assert vars(install.InstallState()) == {"restart_mysql": False}


def test_firstboot_state_defaults():
    assert vars(firstboot.FirstbootState()) == {
        "imds": None,
        "instance_id": None,
        "region": None,
        "imds_version": "none",
        "identity_known": False,
        "private_ip": None,
        "role": firstboot.STANDALONE,
        "existing": {},
        "old_fernet_keys": [],
        "record": None,
        "mode": None,
        "parallelism": None,
        "mem_mib": None,
        "stored": set(),
        "first_of_deployment": False,
        "generated": {},
    }


@pytest.mark.parametrize(
    ("module", "state_class"), [("install", install.InstallState), ("firstboot", firstboot.FirstbootState)]
)
def test_steps_use_only_declared_state(module, state_class):
    used = state_attributes_used(module)
    assert used
    assert used <= set(vars(state_class()))


def test_each_program_gives_its_steps_a_fresh_state(monkeypatch):
    seen = []
    monkeypatch.setattr(install, "run_steps", lambda ctx, steps, title: seen.append(ctx.state) or 0)
    monkeypatch.setattr(firstboot, "run_steps", lambda ctx, steps, title: seen.append(ctx.state) or 0)
    assert install.main(RecordingContext()) == 0
    assert firstboot.main(RecordingContext()) == 0
    assert [type(s) for s in seen] == [install.InstallState, firstboot.FirstbootState]


def test_identity_without_metadata_comes_from_machine_id_and_settings(monkeypatch):
    class NoImds:
        def __init__(self, **options):
            assert options["patience"] >= 60  # a slow IMDS at boot is waited for

        def get(self, path):
            raise NoMetadata("no IMDS here")

    monkeypatch.setattr(firstboot, "Imds", NoImds)
    monkeypatch.setattr(firstboot, "machine_id", lambda: "abc123")
    ctx = RecordingContext({"region": "eu-north-1"}, state=firstboot.FirstbootState())
    firstboot.read_instance_identity(ctx)
    assert not ctx.state.identity_known
    assert firstboot.decide_what_to_do(ctx) is None  # no record: a first boot without IMDS
    assert (ctx.state.instance_id, ctx.state.region) == ("machine-abc123", "eu-north-1")
    assert (ctx.state.imds, ctx.state.imds_version) == (None, "none")
