import pytest
from provfakes import RecordingContext
from provisioning import imagecheck
from provisioning.imagecheck import PACKER_SCRIPT, ROTATED_LOG
from provisioning.runner import StepFailed


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


@pytest.mark.parametrize("dry_run", [False, True])
def test_validate_image_checks_once_and_fails_only_for_real(dry_run, monkeypatch, capsys):
    calls = []

    def checks(ctx):
        calls.append(ctx)
        return [("ssh host keys removed", []), ("no shell history", ["/root/.bash_history"])]

    monkeypatch.setattr(imagecheck, "checks", checks)
    ctx = RecordingContext(dry_run=dry_run)
    if dry_run:
        imagecheck.validate_image(ctx)
    else:
        with pytest.raises(StepFailed, match="1 hygiene rule"):
            imagecheck.validate_image(ctx)
    assert calls == [ctx]
    out = capsys.readouterr().out
    assert "ok    ssh host keys removed" in out
    assert "FAIL  no shell history: /root/.bash_history" in out
