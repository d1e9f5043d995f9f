import pytest
from provisioning.imagecheck import PACKER_SCRIPT, ROTATED_LOG


@pytest.mark.parametrize(
    ("name", "rotated"),
    [
        ("syslog", False),
        ("dpkg.log", False),
        ("error.log", False),
        ("syslog.1", True),
        ("dpkg.log.2.gz", True),
        ("eipp.log.xz", True),
        ("auth.log.old", True),
        ("messages-20261124", True),
    ],
)
def test_rotated_logs_are_recognised(name, rotated):
    assert bool(ROTATED_LOG.search(name)) is rotated


@pytest.mark.parametrize(
    ("name", "is_packer"),
    [
        ("script_4821.sh", True),
        ("script_.sh", False),
        ("myscript_1.sh", False),
        ("script_12.sh.bak", False),
    ],
)
def test_only_packers_running_script_is_tolerated_in_tmp(name, is_packer):
    assert bool(PACKER_SCRIPT.match(name)) is is_packer
