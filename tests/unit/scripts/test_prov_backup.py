"""Database backups: what the dump is given, where it goes, what is kept, what restore loads."""

import gzip
import os
import stat
import time

import pytest
from provfakes import RecordingContext
from provisioning.running import backup
from provisioning.shared import layout
from provisioning.shared.runner import Context, StepFailed


@pytest.fixture
def backups(tmp_path, monkeypatch):
    monkeypatch.setattr(layout, "BACKUP_DIR", str(tmp_path / "backups"))
    os.makedirs(layout.BACKUP_DIR)
    return tmp_path


def test_a_dump_is_consistent_gzipped_private_and_needs_no_password(backups, monkeypatch):
    bin_dir = backups / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "mysqldump"
    # A stand-in that writes its arguments into the dump.
    fake.write_text('#!/bin/sh\necho "-- args: $*"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    ctx = RecordingContext({"backup_retention_days": 7}, state=backup.BackupState())
    umask = os.umask(0o022)  # backup.main sets its own; give the rest of the session its own back
    try:
        assert backup.main(ctx) == 0
    finally:
        os.umask(umask)
    (dump,) = backup.dumps()
    with gzip.open(dump, "rt") as fh:
        args = fh.read().split()
    assert "--single-transaction" in args and args[-2:] == ["--databases", "airflow"]
    assert args[args.index("-u") + 1] == layout.BACKUP_MYSQL_USER  # by socket, no password
    assert not [a for a in args if "password" in a.lower()]
    assert stat.S_IMODE(os.stat(dump).st_mode) == 0o600


def test_a_failed_dump_leaves_nothing(backups, monkeypatch):
    bin_dir = backups / "bin"
    bin_dir.mkdir()
    (bin_dir / "mysqldump").write_text("#!/bin/sh\necho partial\necho 'Access denied' >&2\nexit 2\n")
    (bin_dir / "mysqldump").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    ctx = RecordingContext(state=backup.BackupState())
    with pytest.raises(StepFailed, match="mysqldump exited 2: Access denied"):
        backup.dump_database(ctx)
    assert os.listdir(layout.BACKUP_DIR) == []


def test_old_dumps_go_but_the_newest_stays(backups):
    now = time.time()
    for days, stamp in ((20, "20261101T000000Z"), (10, "20261111T000000Z"), (1, "20261125T000000Z")):
        path = os.path.join(layout.BACKUP_DIR, f"airflow-{stamp}.sql.gz")
        open(path, "w").close()
        os.utime(path, (now - days * 86400, now - days * 86400))
    ctx = Context({"backup_retention_days": 7}, None, False)
    backup.prune_old_backups(ctx)
    assert [os.path.basename(p) for p in backup.dumps()] == ["airflow-20261125T000000Z.sql.gz"]
    ctx = Context({"backup_retention_days": 1}, None, False)
    backup.prune_old_backups(ctx)
    assert len(backup.dumps()) == 1  # the newest is kept whatever its age


def test_restore_without_a_dump_says_what_to_do(backups):
    with pytest.raises(StepFailed, match="airflow-ami-backup now"):
        backup.restore(RecordingContext())


def test_no_s3_uri_means_local_dumps_only():
    assert backup.upload_to_s3(RecordingContext({"backup_s3_uri": ""})) == "skipped"


def test_the_dump_goes_to_s3_in_the_instances_region_with_its_role(backups, monkeypatch, capsys):
    asked = []

    class FakeImds:
        def role_credentials(self):
            return {"access_key": "AK", "secret_key": "RoleS3cretKey1234", "token": "RoleSessionToken1234"}

        def get(self, path):
            asked.append(path)
            return {"meta-data/placement/region": "eu-north-1"}.get(path)

    put = []
    monkeypatch.setattr(backup, "Imds", FakeImds)
    monkeypatch.setattr(backup, "put_s3_object", lambda *args, **kw: put.append(args))
    dump = os.path.join(layout.BACKUP_DIR, "airflow-20261126T000000Z.sql.gz")
    with open(dump, "wb") as fh:
        fh.write(b"dump")
    ctx = RecordingContext({"backup_s3_uri": "s3://backups-bucket/airflow/prod", "region": "us-east-1"})
    ctx.state = backup.BackupState()
    ctx.state.dump = dump
    assert backup.upload_to_s3(ctx) is None
    assert asked == ["meta-data/placement/region"]
    assert put == [
        (
            "backups-bucket",
            "airflow/prod/airflow-20261126T000000Z.sql.gz",
            b"dump",
            "eu-north-1",
            FakeImds().role_credentials(),
        )
    ]
    ctx.info("creds RoleS3cretKey1234 RoleSessionToken1234")
    out = capsys.readouterr().out
    assert "RoleS3cretKey1234" not in out and "RoleSessionToken1234" not in out
