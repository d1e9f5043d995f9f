"""Database backups: the dump and its manifest, when it is due, where it goes, and a
restore that is checked, takes a safety dump, loads aside and swaps in whole."""

import gzip
import json
import os
import stat
import threading
import time
import types

import pytest
from provfakes import RecordingContext
from provisioning.running import backup
from provisioning.shared import contract, layout
from provisioning.shared.runner import Context, StepFailed

ROLE_CREDS = {"access_key": "AK", "secret_key": "RoleS3cretKey1234", "token": "RoleSessionToken1234"}


@pytest.fixture
def backups(tmp_path, monkeypatch):
    monkeypatch.setattr(layout, "BACKUP_DIR", str(tmp_path / "backups"))
    monkeypatch.setattr(layout, "DEPLOYMENT_RECORD", str(tmp_path / "deployment.json"))
    monkeypatch.setattr(layout, "FIRSTBOOT_MARKER", str(tmp_path / "firstboot.json"))
    monkeypatch.setattr(layout, "RESTORED_RECORD", str(tmp_path / "restored.json"))
    os.makedirs(layout.BACKUP_DIR)
    (tmp_path / "firstboot.json").write_text(json.dumps({"instance_id": "i-0abc"}))
    return tmp_path


def fake_bin(backups, monkeypatch, name, script):
    """A stand-in for a MySQL program on PATH."""
    bin_dir = backups / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / name).write_text("#!/bin/sh\n" + script)
    (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")


class Database(RecordingContext):
    """MySQL as root over the socket, answered from tables by database."""

    def __init__(self, settings=None, tables=None, **kw):
        super().__init__(settings, **kw)
        self.tables = (
            tables if tables is not None else {"airflow": ["dag_run", "xcom"], "airflow_restoring": []}
        )
        self.sql = []
        self.check_migrations = 0

    def probe(self, argv, **kw):
        return 0, ""  # mysqladmin ping: up

    def run(self, argv, input_text=None, **kw):
        self.commands.append(list(argv))
        self.sql.append(input_text or "")
        if input_text and "information_schema.tables" in input_text:
            database = input_text.split("table_schema = '")[1].split("'")[0]
            return 0, "\n".join(self.tables.get(database, []))
        if "check-migrations" in argv:
            return (
                self.check_migrations,
                "" if not self.check_migrations else "There are still unapplied migrations",
            )
        if argv[-1].startswith("SELECT 'dag'"):
            return 0, "\n".join(f"{t}\t{n}" for n, t in enumerate(layout.COUNTED_TABLES))
        if "alembic_version" in argv[-1]:
            return 0, "abc123\n"
        return 0, ""


def test_a_dump_is_consistent_gzipped_private_needs_no_password_and_has_its_manifest(backups, monkeypatch):
    # A stand-in that writes its arguments into the dump.
    fake_bin(backups, monkeypatch, "mysqldump", 'echo "-- args: $*"\n')
    (backups / "deployment.json").write_text(json.dumps({"deployment": "prod", "backup_s3_uri": ""}))
    ctx = Database({"backup_retention_days": 7})
    assert backup.main(ctx) == 0
    (dump,) = backup.dumps()
    with gzip.open(dump, "rt") as fh:
        args = fh.read().split()
    assert "--single-transaction" in args and args[-1] == "airflow", "the tables, loadable into any database"
    assert args[args.index("-u") + 1] == layout.BACKUP_MYSQL_USER  # by socket, no password
    assert not [a for a in args if "password" in a.lower()]
    assert stat.S_IMODE(os.stat(dump).st_mode) == 0o600
    manifest = json.loads(ctx.written[backup.manifest_path(dump)])
    assert manifest["sha256"] == backup.sha256_of(dump) and manifest["dump"] == os.path.basename(dump)
    assert (manifest["deployment"], manifest["airflow_version"], manifest["schema_revision"]) == (
        "prod",
        ctx.settings["airflow_version"],
        "abc123",
    )
    assert manifest["rows"] == {t: n for n, t in enumerate(layout.COUNTED_TABLES)}


class OnDisk(Database):
    """Removes what it removes: two backups that meet act on the same directory."""

    remove = Context.remove


def frozen_clock(monkeypatch):
    """backup's clock, stopped on one second (as when the timer and a manual backup start
    together) until the backup itself waits for the next."""
    now = [time.time()]

    def sleep(seconds):
        now[0] += seconds

    clock = types.SimpleNamespace(
        strftime=time.strftime, time=time.time, gmtime=lambda: time.gmtime(now[0]), sleep=sleep
    )
    monkeypatch.setattr(backup, "time", clock)


def start_a_slow_backup(backups, monkeypatch, **kw):
    """A backup whose mysqldump takes a while, running, its .partial written: (thread, results)."""
    gate = backups / "first-dump-started"
    fake_bin(
        backups,
        monkeypatch,
        "mysqldump",
        f"[ -e {gate} ] || {{ touch {gate}; sleep 1.5; }}\necho '-- dump'\n",
    )
    (backups / "deployment.json").write_text(json.dumps({"deployment": "prod", "backup_s3_uri": ""}))
    results = []
    first = threading.Thread(target=lambda: results.append(backup.main(OnDisk({"backup_retention_days": 7}))))
    first.start()
    deadline = time.time() + 10
    while not [n for n in os.listdir(layout.BACKUP_DIR) if n.endswith(".partial")]:
        assert time.time() < deadline, "the first backup never started its dump"
        time.sleep(0.02)
    return first, results


def test_a_backup_that_meets_another_waits_and_both_dumps_are_whole(backups, monkeypatch):
    # Found in the suite: `airflow-ami-backup now` and the timer's tick in one second, each
    # removing the other's dump as a stale .partial, one failing with FileNotFoundError.
    frozen_clock(monkeypatch)
    first, results = start_a_slow_backup(backups, monkeypatch)
    results.append(backup.main(OnDisk({"backup_retention_days": 7})))
    first.join()
    assert results == [0, 0]
    found = backup.dumps()
    assert len(found) == 2, "the second waits for the next second's name, none is overwritten"
    assert not [n for n in os.listdir(layout.BACKUP_DIR) if n.endswith(".partial")]
    for dump in found:
        with gzip.open(dump, "rt") as fh:
            assert fh.read() == "-- dump\n"


def test_the_timer_s_tick_skips_while_a_backup_runs(backups, monkeypatch):
    first, results = start_a_slow_backup(backups, monkeypatch)
    assert backup.main(OnDisk({"backup_retention_days": 7}), when_due=True) == 0
    assert backup.dumps() == [], "the tick returned at once, dumping nothing"
    first.join()
    assert results == [0] and len(backup.dumps()) == 1


def test_a_failed_dump_leaves_nothing(backups, monkeypatch):
    fake_bin(backups, monkeypatch, "mysqldump", "echo partial\necho 'Access denied' >&2\nexit 2\n")
    ctx = RecordingContext(state=backup.BackupState())
    with pytest.raises(StepFailed, match="mysqldump exited 2: Access denied"):
        backup.dump_database(ctx)
    assert os.listdir(layout.BACKUP_DIR) == []


def test_old_dumps_go_with_their_manifests_but_the_newest_stays(backups):
    now = time.time()
    for days, stamp in ((20, "20261101T000000Z"), (10, "20261111T000000Z"), (1, "20261125T000000Z")):
        for suffix in (backup.DUMP_SUFFIX, backup.MANIFEST_SUFFIX):
            path = os.path.join(layout.BACKUP_DIR, f"airflow-{stamp}{suffix}")
            open(path, "w").close()
            os.utime(path, (now - days * 86400, now - days * 86400))
    backup.prune_old_backups(Context({"backup_retention_days": 7}, None, False))
    assert sorted(os.listdir(layout.BACKUP_DIR)) == [
        "airflow-20261125T000000Z.json",
        "airflow-20261125T000000Z.sql.gz",
    ]
    backup.prune_old_backups(Context({"backup_retention_days": 1}, None, False))
    assert len(backup.dumps()) == 1  # the newest is kept whatever its age


def test_a_tick_dumps_only_once_the_interval_has_passed(backups):
    (backups / "deployment.json").write_text(json.dumps({"deployment": None, "backup_interval_minutes": 60}))
    ctx = RecordingContext()
    assert backup.due(ctx), "no dump yet"
    newest = os.path.join(layout.BACKUP_DIR, "airflow-20261125T000000Z.sql.gz")
    open(newest, "w").close()
    assert not backup.due(ctx), "made just now"
    assert backup.main(RecordingContext(), when_due=True) == 0 and backup.dumps() == [newest]
    old = time.time() - 58 * 60  # within half a tick of the hour: due
    os.utime(newest, (old, old))
    assert backup.due(ctx)


def test_the_launch_s_choices_win_over_the_bake_s(backups):
    ctx = RecordingContext({"backup_s3_uri": "s3://baked/prefix", "backup_interval_minutes": 60})
    assert backup.plan(ctx) == {
        "deployment": None,
        "owner": "i-0abc",
        "backup_s3_uri": "s3://baked/prefix",
        "interval_minutes": 60,
    }
    (backups / "deployment.json").write_text(
        json.dumps({"deployment": "prod", "backup_s3_uri": "s3://chosen/p", "backup_interval_minutes": 15})
    )
    assert backup.plan(ctx) == {
        "deployment": "prod",
        "owner": "prod",
        "backup_s3_uri": "s3://chosen/p",
        "interval_minutes": 15,
    }


def fake_role(monkeypatch, region="eu-north-1"):
    class FakeImds:
        def role_credentials(self):
            return dict(ROLE_CREDS)

        def get(self, path):
            return {"meta-data/placement/region": region}.get(path)

    monkeypatch.setattr(backup, "Imds", FakeImds)


def test_no_s3_uri_means_local_dumps_only(backups):
    assert backup.upload_to_s3(RecordingContext({"backup_s3_uri": ""})) == "skipped"


def test_the_dump_then_its_manifest_go_under_the_deployment_in_the_instance_s_region(
    backups, monkeypatch, capsys
):
    fake_role(monkeypatch)
    put = []
    monkeypatch.setattr(backup, "put_s3_object", lambda *args, **kw: put.append(args[:4]))
    (backups / "deployment.json").write_text(
        json.dumps({"deployment": "prod", "backup_s3_uri": "s3://backups-bucket/airflow"})
    )
    dump = os.path.join(layout.BACKUP_DIR, "airflow-20261126T000000Z.sql.gz")
    with open(dump, "wb") as fh:
        fh.write(b"dump")
    with open(backup.manifest_path(dump), "wb") as fh:
        fh.write(b"{}")
    ctx = RecordingContext({"region": "us-east-1"}, state=backup.BackupState())
    ctx.state.dump, ctx.state.manifest = dump, backup.manifest_path(dump)
    assert backup.upload_to_s3(ctx) is None
    assert put == [
        ("backups-bucket", "airflow/prod/airflow-20261126T000000Z.sql.gz", b"dump", "eu-north-1"),
        ("backups-bucket", "airflow/prod/airflow-20261126T000000Z.json", b"{}", "eu-north-1"),
    ]
    ctx.info("creds RoleS3cretKey1234 RoleSessionToken1234")
    out = capsys.readouterr().out
    assert "RoleS3cretKey1234" not in out and "RoleSessionToken1234" not in out


def test_restore_without_a_dump_says_what_to_do(backups):
    assert backup.restore(RecordingContext()) != 0


def a_dump(name="airflow-20261126T000000Z.sql.gz", airflow="3.3.2", lines=b"CREATE TABLE x (i int);\n"):
    """A dump in BACKUP_DIR and its manifest."""
    path = os.path.join(layout.BACKUP_DIR, name)
    with gzip.open(path, "wb") as fh:
        fh.write(b"CREATE DATABASE /*!32312 IF NOT EXISTS*/ `airflow`;\nUSE `airflow`;\n" + lines)
    manifest = {"sha256": backup.sha256_of(path), "airflow_version": airflow, "rows": {}}
    with open(backup.manifest_path(path), "w") as fh:
        json.dump(manifest, fh)
    return path


def restoring(backups, monkeypatch, **kw):
    loaded = backups / "loaded.sql"
    fake_bin(backups, monkeypatch, "mysql", f'cat > {loaded}\necho "$*" >> {loaded}.args\n')
    fake_bin(backups, monkeypatch, "mysqldump", "echo '-- live'\n")
    return Database(**kw), loaded


def test_a_damaged_dump_or_one_of_a_newer_airflow_is_refused_and_nothing_changes(backups, monkeypatch):
    ctx, _ = restoring(backups, monkeypatch)
    newer = a_dump("airflow-20261127T000000Z.sql.gz", airflow="3.4.0")
    assert backup.restore(ctx, newer) != 0
    damaged = a_dump()
    with gzip.open(damaged, "ab") as fh:
        fh.write(b"-- changed")
    assert backup.restore(ctx, damaged) != 0
    assert ctx.commands == [], "nothing was stopped, dumped or loaded"


def test_a_restore_takes_a_safety_dump_loads_aside_and_swaps_in_whole(backups, monkeypatch):
    ctx, loaded = restoring(backups, monkeypatch)
    dump = a_dump(airflow="3.2.2")
    assert backup.restore(ctx, dump) == 0
    assert [os.path.basename(p) for p in os.listdir(layout.BACKUP_DIR) if p.startswith("before-restore-")]
    assert loaded.read_bytes() == b"CREATE TABLE x (i int);\n", "its CREATE DATABASE and USE were left out"
    assert "airflow_restoring" in (backups / "loaded.sql.args").read_text()
    sql = "\n".join(ctx.sql)
    assert "RENAME TABLE `airflow`.`dag_run` TO `airflow_replaced`.`dag_run`" in sql
    assert next(a for a in ctx.commands if a[0] == layout.AIRFLOW_BIN)[1:] == ["db", "migrate"], (
        "3.2.2 < 3.3.2"
    )
    stops = [c for c in ctx.commands if c[:2] == ["systemctl", "stop"]]
    starts = [c for c in ctx.commands if c[:2] == ["systemctl", "start"]]
    assert stops and starts == [["systemctl", "start", layout.AIRFLOW_TARGET]]
    assert json.loads(ctx.written[layout.RESTORED_RECORD])["source"] == dump


def test_a_restore_whose_schema_is_not_current_puts_the_live_tables_back(backups, monkeypatch):
    ctx, _ = restoring(backups, monkeypatch)
    ctx.check_migrations = 1
    ctx.tables["airflow_replaced"] = ["dag_run", "xcom"]
    assert backup.restore(ctx, a_dump()) != 0
    renames = [s for s in ctx.sql if s.startswith("RENAME TABLE")]
    assert len(renames) == 2 and "`airflow_replaced`.`dag_run` TO `airflow`.`dag_run`" in renames[1]
    assert ["systemctl", "start", layout.AIRFLOW_TARGET] in ctx.commands, "Airflow is back as it was"


def test_latest_is_the_deployment_s_newest_manifest(backups, monkeypatch):
    fake_role(monkeypatch)
    (backups / "deployment.json").write_text(
        json.dumps({"deployment": "prod", "backup_s3_uri": "s3://b-ups/x"})
    )
    keys = [
        "x/prod/airflow-20261125T000000Z.sql.gz",
        "x/prod/airflow-20261125T000000Z.json",
        "x/prod/airflow-20261126T000000Z.json",
    ]
    monkeypatch.setattr(
        backup, "list_s3_keys", lambda bucket, prefix, *a, **kw: [k for k in keys if k.startswith(prefix)]
    )
    uri = backup.latest_dump_uri(RecordingContext(), "eu-north-1", ROLE_CREDS, None)
    assert uri == "s3://b-ups/x/prod/airflow-20261126T000000Z.sql.gz"
    assert contract.backup_location("s3://b-ups/x", "prod") == ("b-ups", "x/prod/")


def test_restore_latest_fetches_the_deployment_s_newest_dump_from_s3(backups, monkeypatch):
    fake_role(monkeypatch)
    (backups / "deployment.json").write_text(
        json.dumps({"deployment": "prod", "backup_s3_uri": "s3://b-ups/x"})
    )
    stored = {"x/prod/airflow-20261126T000000Z.json": b'{"sha256": "s"}'}
    stored["x/prod/airflow-20261126T000000Z.sql.gz"] = b"dump"
    monkeypatch.setattr(backup, "list_s3_keys", lambda bucket, prefix, *a, **kw: sorted(stored))
    monkeypatch.setattr(backup, "get_s3_object", lambda bucket, key, *a, **kw: stored.get(key))
    ctx = RecordingContext(
        {"aws_endpoint_url": ""}, state=backup.RestoreState(contract.RESTORE_LATEST, False)
    )
    assert backup.fetch_dump(ctx) is None
    assert ctx.state.manifest == {"sha256": "s"}
    assert ctx.written[ctx.state.dump] == b"dump"


def test_a_backup_or_a_restore_gives_the_caller_its_umask_back(backups, monkeypatch):
    fake_bin(backups, monkeypatch, "mysqldump", "echo '-- dump'\n")
    (backups / "deployment.json").write_text(json.dumps({"deployment": "", "backup_s3_uri": ""}))
    before = os.umask(0o022)
    try:
        assert backup.main(Database({"backup_retention_days": 7})) == 0
        assert backup.restore(RecordingContext(), "/nonexistent.sql.gz") != 0
        assert os.umask(0o022) == 0o022, "first boot, after a restore, would make every file private"
    finally:
        os.umask(before)
