"""Least privilege: each Airflow unit's systemd exposure (systemd-analyze security) is "OK"."""

from __future__ import annotations

import re

import pytest

from .lib import Instance, expect, layout

# systemd-analyze security: 0-10, lower is safer; up to 4.9 is rated "OK".
MAX_EXPOSURE = 4.9
# `systemd-analyze security` and most sandboxing directives came with systemd 240-247.
MIN_SYSTEMD = 247
UNITS = (layout.FIRSTBOOT_UNIT, *layout.SERVICE_UNITS, *(job["unit"] for job in layout.HOUSEKEEPING))
EXPOSURE_RE = re.compile(r"Overall exposure level for \S+: (\d+(?:\.\d+)?) (\S+)")

# unit -> (exposure, rating): printed at the end of the session (conftest.py).
EXPOSURES: dict[str, tuple[float, str]] = {}


def systemd_version(instance: Instance) -> int:
    first = instance.sh("systemctl --version").stdout.split()
    return int(first[1]) if len(first) > 1 and first[1].isdigit() else 0


@pytest.mark.parametrize("unit", UNITS)
def test_unit_exposure_is_ok(instance: Instance, unit: str) -> None:
    version = systemd_version(instance)
    if version < MIN_SYSTEMD:
        pytest.skip(f"systemd {version} on this OS predates `systemd-analyze security` and most sandboxing")
    res = instance.sh(f"systemd-analyze security --no-pager {unit}")
    found = EXPOSURE_RE.search(res.stdout)
    assert found, expect(f"an exposure rating of {unit}", res.stdout[-500:] or res.stderr[-500:], "")
    exposure = float(found.group(1))
    EXPOSURES[unit] = (exposure, found.group(2))
    assert exposure <= MAX_EXPOSURE, expect(
        f"{unit} exposure <= {MAX_EXPOSURE} (OK)",
        f"{exposure} {found.group(2)}",
        f"systemd-analyze security {unit} (the ✗ lines); packer/systemd.yaml",
    )
