"""Least privilege: each Airflow unit's systemd exposure (systemd-analyze security) is "OK"."""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path

import pytest

from airflow_ami.driver.instance import AIRFLOW_UNITS, Instance, expect, journal, layout

# systemd-analyze security: 0-10, lower is safer; up to 4.9 is rated "OK".
MAX_EXPOSURE = 4.9
# `systemd-analyze security` and most sandboxing directives came with systemd 240-247.
MIN_SYSTEMD = 247
# What systemd 219's directives (Amazon Linux 2) rate at most, offline: (a service, first boot).
OLD_SYSTEMD_EXPOSURE = (5.5, 8.0)
# First boot and its second half run as root with the same sandbox.
FIRSTBOOT_UNITS = (layout.FIRSTBOOT_UNIT, layout.FIRSTBOOT_ADMIN_UNIT)
UNITS = (*FIRSTBOOT_UNITS, *layout.SERVICE_UNITS, *(job["unit"] for job in layout.HOUSEKEEPING))
EXPOSURE_RE = re.compile(r"Overall exposure level for \S+: (\d+(?:\.\d+)?) (\S+)")

# unit -> (exposure, rating): printed at the end of the session (conftest.py).
EXPOSURES: dict[str, tuple[float, str]] = {}


def systemd_version(instance: Instance) -> int:
    first = instance.sh("systemctl --version").stdout.split()
    return int(first[1]) if len(first) > 1 and first[1].isdigit() else 0


def offline_exposure(instance: Instance, unit: str) -> str:
    """`systemd-analyze security --offline` of the instance's unit file, run by this machine's
    systemd (>= 250): how a modern systemd rates the directives an old one was given."""
    text = instance.read_text(f"{layout.SYSTEMD_DIR}/{unit}")
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / unit
        path.write_text(text)
        done = subprocess.run(
            ["systemd-analyze", "security", "--offline=true", "--no-pager", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
    return done.stdout + done.stderr


@pytest.mark.parametrize("unit", UNITS)
def test_unit_exposure_is_ok(instance: Instance, unit: str) -> None:
    """On the instance's own systemd where it rates units (>= 247); on an older one (Amazon
    Linux 2's 219) this machine's systemd rates the unit file as given, against what 219's
    directives allow (first boot runs as root and writes /etc: rated higher)."""
    version = systemd_version(instance)
    if version >= MIN_SYSTEMD:
        how, bound = "", MAX_EXPOSURE
        output = instance.sh(f"systemd-analyze security --no-pager {unit}").stdout
    else:
        how, bound = (
            f" (offline, systemd {version}'s directives)",
            OLD_SYSTEMD_EXPOSURE[unit in FIRSTBOOT_UNITS],
        )
        output = offline_exposure(instance, unit)
    found = EXPOSURE_RE.search(output)
    assert found, expect(f"an exposure rating of {unit}", output[-500:], "")
    exposure = float(found.group(1))
    EXPOSURES[unit] = (exposure, found.group(2) + how)
    assert exposure <= bound, expect(
        f"{unit} exposure <= {bound}{how}",
        f"{exposure} {found.group(2)}",
        f"systemd-analyze security {unit} (the ✗ lines); {layout.SYSTEMD_DIR}/{unit}",
    )


def mount_mode(mountinfo: str, path: str) -> str:
    """'ro' or 'rw': how `path` is mounted in a /proc/<pid>/mountinfo table.

    The mount with the longest mount point above `path` holds it; of mounts stacked on
    one point, the last listed is on top.
    """
    mode, best = "", -1
    for line in mountinfo.splitlines():
        fields = line.split()
        point, options = fields[4], fields[5].split(",")
        above = path == point or path.startswith(point.rstrip("/") + "/")
        if above and len(point) >= best:
            mode, best = ("ro" if "ro" in options else "rw"), len(point)
    return mode


# What ProtectSystem= makes read-only (systemd.exec(5)): `full` the OS and its config,
# `strict` the whole file system but for the unit's writable paths.
READ_ONLY = {"full": ("/usr", "/etc", layout.ETC_AIRFLOW), "strict": ("/usr", "/etc", "/var/lib", "/srv")}


@pytest.mark.parametrize("unit", AIRFLOW_UNITS)
def test_a_service_s_sandbox_holds_as_its_directives_say(instance: Instance, unit: str) -> None:
    """The directives' meaning, not their presence: the running process's own mounts."""
    props = instance.unit_props(unit, "MainPID", "ProtectSystem")
    look = f"systemctl cat {unit}; packer/systemd.yaml (directive set {instance.settings['unit_directives']})"
    assert props["ProtectSystem"] in READ_ONLY, expect(
        "ProtectSystem=full or strict", f"ProtectSystem={props['ProtectSystem']}", look
    )
    mountinfo = instance.check(f"cat /proc/{props['MainPID']}/mountinfo", look=journal(unit))
    wanted = {**dict.fromkeys(READ_ONLY[props["ProtectSystem"]], "ro"), layout.AIRFLOW_LOGS: "rw"}
    found = {path: mount_mode(mountinfo, path) for path in wanted}
    assert found == wanted, expect(wanted, found, f"/proc/<MainPID of {unit}>/mountinfo; {look}")
