import os

import pytest
from provisioning.runner import Context, StepFailed, run_steps


def make(dry_run=False):
    return Context({}, None, dry_run)


def test_dry_run_writes_nothing(tmp_path):
    ctx = make(dry_run=True)
    target = tmp_path / "sub" / "file"
    assert ctx.write_file(str(target), "x") is True
    assert ctx.ensure_dir(str(tmp_path / "d")) is True
    assert not (tmp_path / "sub").exists()
    assert not (tmp_path / "d").exists()
    with pytest.raises(AssertionError):
        ctx.run(["true"])


def test_write_file_is_idempotent_and_sets_mode(tmp_path):
    ctx = make()
    target = str(tmp_path / "f")
    assert ctx.write_file(target, "hello", 0o600) is True
    assert ctx.write_file(target, "hello", 0o600) is False
    assert oct(os.stat(target).st_mode & 0o777) == oct(0o600)
    assert ctx.write_file(target, "hello", 0o644) is True  # mode drift is fixed
    assert ctx.write_file(target, "bye", 0o644) is True
    with open(target) as fh:
        assert fh.read() == "bye"


def test_secrets_are_redacted_and_refused_in_arguments(capsys):
    ctx = make()
    secret = ctx.add_secret("Sup3rS3cretValue")
    ctx.info(f"connecting with {secret}")
    assert "Sup3rS3cretValue" not in capsys.readouterr().out
    with pytest.raises(AssertionError):
        ctx.run(["echo", "--password=" + secret])
    # via stdin it is fine, and the command output is redacted on failure
    with pytest.raises(StepFailed) as err:
        ctx.run(["sh", "-c", "cat; exit 3"], input_text=secret)
    assert "Sup3rS3cretValue" not in str(err.value)
    assert "***" in ctx.redact(str(err.value)) or "exited 3" in str(err.value)


def test_run_steps_names_the_failed_step_and_stops(capsys):
    calls = []

    def first_step(ctx):
        calls.append("first")

    def broken_step(ctx):
        raise StepFailed("disk on fire")

    def never_reached(ctx):
        calls.append("never")

    rc = run_steps(make(), [first_step, broken_step, never_reached], "test")
    out = capsys.readouterr().out
    assert rc == 1
    assert calls == ["first"]
    assert "step 'broken_step' failed" in out
    assert "disk on fire" in out
    assert "==> first_step" in out


def test_run_steps_reports_changes_and_durations(capsys):
    def changes_something(ctx):
        ctx.would("do a thing")

    def changes_nothing(ctx):
        pass

    ctx = make()
    assert run_steps(ctx, [changes_something, changes_nothing], "test") == 0
    assert [t["result"] for t in ctx.timings] == ["changed", "unchanged"]
    assert all("seconds" in t for t in ctx.timings)
    assert "1 step(s) changed something: changes_something" in capsys.readouterr().out
