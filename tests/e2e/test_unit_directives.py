"""Amazon Linux 2's unit sandbox, live: the rehearsal image baked with systemd 219's directive
set (`--unit-directives amazon-linux-2`: ProtectSystem=full, ReadWriteDirectories=, none of
the newer directives) boots through first boot and the verify suite.

The local cloud runs Debian only, but a directive means on today's systemd what it meant
on 219 (`full` makes /usr and /etc read-only there too), so a first boot that cannot
write /etc/airflow under that set fails here as it would on Amazon Linux 2.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from airflow_ami.driver.instance import AIRFLOW_UNITS
from airflow_ami.seam import layout
from tests.e2e.conftest import REPO, bake, our_leftovers

BUILD_NAME = "debian-x86_64-local-al2-units"
OPTIONS = ("--cloud", "local", "--build-name", BUILD_NAME)
# Exposure is rated against today's directives: 219's set is not held to it here.
CHECKS = "(test_services or test_sandbox or test_security or test_airflow) and not exposure"
# (test, the end of its parameter id): each must have run and passed.
MUST_PASS = (
    ("test_services.py::test_firstboot_done", ""),
    *(
        ("test_sandbox.py::test_a_service_s_sandbox_holds_as_its_directives_say", f"{u}]")
        for u in AIRFLOW_UNITS
    ),
)


def passed(output: str, test: str, param_end: str) -> bool:
    lines = output.splitlines()
    return any(line.startswith(f"PASSED tests/infra/{test}") and line.endswith(param_end) for line in lines)


@pytest.fixture(scope="module")
def launched() -> Iterator[dict[str, object]]:
    built = bake("build-ami", *OPTIONS, "--unit-directives", "amazon-linux-2")
    try:
        assert built.returncode == 0, "build-ami with Amazon Linux 2's directive set failed; output above"
        launch = bake("launch", *OPTIONS)
        assert launch.returncode == 0, "launch failed (first boot under the AL2 sandbox?); output above"
        yield json.loads((REPO / "build" / BUILD_NAME / "ami.json").read_text())
    finally:
        assert bake("teardown", "--cloud", "local").returncode == 0
        assert our_leftovers() == []


def test_the_amazon_linux_2_directive_set_boots_and_verifies(launched: dict[str, object]) -> None:
    assert launched["unit_directives"] == "amazon-linux-2"
    units = bake("ssh", *OPTIONS, "--", "systemctl", "cat", layout.FIRSTBOOT_UNIT, *layout.SERVICE_UNITS)
    assert units.returncode == 0, units.stderr
    assert "ProtectSystem=full" in units.stdout and "ProtectSystem=strict" not in units.stdout
    assert f"ReadWriteDirectories={' '.join(layout.FIRSTBOOT_WRITES)}" in units.stdout
    result = bake("verify", *OPTIONS, "--", "-q", "-rA", "-m", "not slow", "-k", CHECKS)
    assert result.returncode == 0, "verify failed on the AL2 directive set; its output is above"
    for test, param_end in MUST_PASS:
        assert passed(result.stdout, test, param_end), f"{test} ...{param_end} did not run and pass"
