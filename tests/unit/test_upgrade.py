"""./bake upgrade's steps: in order, and a failure at any step before the switch is over
leaves the old instance serving as it did (the new one removed)."""

from __future__ import annotations

import dataclasses
import io

import pytest

from airflow_ami import upgrade
from airflow_ami.clouds import InstanceRecord
from airflow_ami.settings import LaunchSettings, load

OLD = InstanceRecord("local", "i-old", "ami-3-2", "us-east-1", "10.213.0.2", "admin", "k", deployment="prod")
NEW = InstanceRecord("local", "i-new", "ami-3-3", "us-east-1", "10.213.0.6", "admin", "k", deployment="prod")
BACKUP = upgrade.Backup("s3://b/prod/airflow-1.sql.gz", {"rows": {"dag_run": 3}}, {"variables": "d"}, {})


class Recording:
    """Operations that record the calls and fail at `failing` (a step name or "remove")."""

    def __init__(self, failing: str = "") -> None:
        self.failing = failing
        self.calls: list[str] = []

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if name == self.failing:
            raise RuntimeError(f"{name} broke\nmore lines")

    def drain(self, old: InstanceRecord) -> list[str]:
        self._call("drain")
        return ["etl"]

    def final_backup(self, old: InstanceRecord) -> upgrade.Backup:
        self._call("final backup")
        return BACKUP

    def launch(self, backup: upgrade.Backup) -> InstanceRecord:
        assert backup is BACKUP
        self._call("launch")
        return NEW

    def wait_healthy(self, new: InstanceRecord) -> None:
        self._call("healthy")

    def check(self, new: InstanceRecord, backup: upgrade.Backup) -> None:
        self._call("check")

    def switch(self, old: InstanceRecord, new: InstanceRecord, paused: list[str]) -> InstanceRecord:
        assert paused == ["etl"]
        self._call("switch")
        return new

    def remove(self, instance: InstanceRecord) -> None:
        self.calls.append(f"remove {instance.instance_id}")

    def resume(self, old: InstanceRecord, paused: list[str]) -> None:
        self.calls.append(f"resume {old.instance_id} {paused}")


def test_the_steps_run_in_order_and_the_old_instance_goes_last() -> None:
    ops = Recording()
    now: list[float] = []

    def clock() -> float:
        now.append(float(len(now)))  # each reading a second later, the step's calls between
        return now[-1]

    report = upgrade.upgrade(ops, OLD, io.StringIO(), clock=clock)
    assert ops.calls == [*upgrade.STEPS, "remove i-old"]
    assert report.new == NEW and report.backup is BACKUP
    # Readings: start, drain (2), the final backup's start, Airflow stopping, its end, ...,
    # the switch's end, then the downtime's: from the stop (4) to after the switch (14).
    assert report.downtime_s == 14.0 - 4.0 and report.timings["drain"] == 1.0


@pytest.mark.parametrize("step", upgrade.STEPS)
def test_a_failure_at_any_step_resumes_the_old_instance_as_it_was(step: str) -> None:
    ops = Recording(failing=step)
    with pytest.raises(upgrade.UpgradeFailed) as failed:
        upgrade.upgrade(ops, OLD, io.StringIO())
    message = str(failed.value)
    assert message.startswith(f"upgrade: {step} failed: {step} broke; i-old serves again as it did")
    assert "\n" not in message
    launched = upgrade.STEPS.index(step) > upgrade.STEPS.index("launch")
    assert ops.calls[-1] == f"resume i-old {['etl'] if step != 'drain' else []}"
    assert ("remove i-new" in ops.calls) == launched and "remove i-old" not in ops.calls
    assert ("the new instance is removed" in message) == launched


def test_ctrl_c_in_the_middle_resumes_the_old_instance_too() -> None:
    class Interrupted(Recording):
        def wait_healthy(self, new: InstanceRecord) -> None:
            raise KeyboardInterrupt

    ops = Interrupted()
    with pytest.raises(upgrade.UpgradeFailed, match="healthy failed: KeyboardInterrupt"):
        upgrade.upgrade(ops, OLD, io.StringIO())
    assert ops.calls[-2:] == ["remove i-new", "resume i-old ['etl']"]


class Replacing:
    """A cloud that records the settings of the replacement it launches."""

    def __init__(self) -> None:
        self.launched: list[LaunchSettings] = []

    def launch_replacement(self, settings: LaunchSettings, image: object) -> InstanceRecord:
        self.launched.append(settings)
        return NEW


@pytest.mark.parametrize(
    ("recorded", "flag", "expected"),
    [("s3://logs/prod", "", "s3://logs/prod"), (None, "s3://flag/logs", "s3://flag/logs")],
)
def test_the_new_instance_restores_the_dump_and_keeps_the_old_one_s_choices(
    recorded: str | None, flag: str, expected: str
) -> None:
    plan = {"deployment": "prod", "backup_s3_uri": "s3://b", "backup_interval_minutes": 15}
    if recorded is not None:
        plan["task_logs_s3_uri"] = recorded
    cloud = Replacing()
    settings = load(LaunchSettings, cli={"cloud": "local", "task_logs_s3_uri": flag})
    ops = upgrade.CloudOperations(cloud, settings, OLD, object(), io.StringIO())  # type: ignore[arg-type]
    assert ops.launch(dataclasses.replace(BACKUP, plan=plan)) == NEW
    (launched,) = cloud.launched
    assert (launched.deployment, launched.restore, launched.backup_s3_uri) == ("prod", BACKUP.uri, "s3://b")
    assert (launched.backup_interval_minutes, launched.task_logs_s3_uri) == (15, expected)
