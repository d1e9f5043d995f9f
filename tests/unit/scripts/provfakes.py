"""Test doubles for the instance-side steps: facts from the profiles, a recording Context."""

from pathlib import Path

import yaml
from provisioning.oskit import OsFacts

PROFILES = Path(__file__).resolve().parents[3] / "packer" / "profiles"


def profile_facts(os_name):
    """The os_facts the host puts in settings.json for packer/profiles/<os_name>.yaml."""
    return OsFacts.from_settings(yaml.safe_load((PROFILES / f"{os_name}.yaml").read_text()))
