import ast
import os
from pathlib import Path

import pytest
from provisioning.shared.runner import Context, StepFailed, real_run_only, run_steps

PROVISIONING = Path(__file__).resolve().parents[3] / "scripts" / "provisioning"


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


def test_act_in_a_dry_run_calls_nothing_and_says_what_it_would_do(capsys):
    ctx = make(dry_run=True)
    calls = []
    assert ctx.act("launch the rocket", calls.append, "rocket") is None
    assert calls == []
    assert ctx.changed is False
    assert "[dry-run] would launch the rocket" in capsys.readouterr().out


def test_act_in_a_real_run_calls_marks_changed_and_returns_the_result(capsys):
    ctx = make()
    calls = []

    def launch(what, *, speed):
        calls.append((what, speed))
        return "launched"

    assert ctx.act("launch the rocket", launch, "rocket", speed=3) == "launched"
    assert calls == [("rocket", 3)]
    assert ctx.changed is True
    out = capsys.readouterr().out
    assert "launch the rocket" in out
    assert "dry-run" not in out


def test_a_real_run_only_step_is_described_in_a_dry_run(capsys):
    calls = []

    @real_run_only("count the running rockets")
    def inspect_rockets(ctx):
        calls.append(ctx.dry_run)

    assert run_steps(make(dry_run=True), [inspect_rockets], "test") == 0
    assert calls == []
    assert "[dry-run] would count the running rockets" in capsys.readouterr().out
    assert run_steps(make(), [inspect_rockets], "test") == 0
    assert calls == [False]


def test_only_a_few_steps_decide_about_dry_runs_themselves():
    """Everything else goes through ctx.act / write_file / real_run_only."""
    readers = set()
    for path in PROVISIONING.rglob("*.py"):
        if path.name == "runner.py":
            continue
        tree = ast.parse(path.read_text())
        for func in ast.walk(tree):
            if isinstance(func, ast.FunctionDef):
                for node in ast.walk(func):
                    if isinstance(node, ast.Attribute) and node.attr == "dry_run":
                        readers.add(f"{path.stem}.{func.name}")
    assert readers == {
        "install.check_running_as_root",  # a dry run may run unprivileged
        "install.fetch_constraints",  # a dry run needs no network
        "imagecheck.validate_image",  # a dry run reports, never fails
        "firstboot.main",  # first boot makes secrets at every step: only described
    }
