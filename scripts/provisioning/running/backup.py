"""`provision.py backup` (airflow-db-backup.service, daily) and `provision.py restore`.

backup: a consistent dump of the metadata database (mysqldump
--single-transaction: one snapshot, no locks held against Airflow), gzipped into
BACKUP_DIR, older dumps pruned past backup_retention_days, and a copy put to
backup_s3_uri with the instance role's credentials when that is set. It runs as
the airflow OS user, which MySQL knows by socket as airflow_backup (read-only).

restore: as root, Airflow stopped, the database replaced by a dump (the newest
unless one is named), Airflow started again.
"""

import glob
import gzip
import os
import shutil
import subprocess
import time

from ..shared import layout as L
from ..shared import systemd
from ..shared.awsapi import Imds, NoMetadata, put_s3_object
from ..shared.mysqlctl import wait_for_mysql
from ..shared.runner import StepFailed, fsync_directory, run_steps

DUMP_PREFIX = "airflow-"
DUMP_SUFFIX = ".sql.gz"


class BackupState(object):
    """What a backup step leaves for a later one."""

    def __init__(self):
        # dump_database: the dump it wrote
        self.dump = None


def dumps():
    """The dumps in BACKUP_DIR, oldest first (their names sort by time)."""
    return sorted(glob.glob(os.path.join(L.BACKUP_DIR, DUMP_PREFIX + "*" + DUMP_SUFFIX)))


def dump_database(ctx):
    for stale in glob.glob(os.path.join(L.BACKUP_DIR, "*.partial")):
        ctx.remove(stale)  # a dump that was killed halfway
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = os.path.join(L.BACKUP_DIR, DUMP_PREFIX + stamp + DUMP_SUFFIX)
    # By socket, as the airflow OS user (auth_socket): no password anywhere.
    argv = [
        "mysqldump",
        "--protocol=socket",
        "-S",
        ctx.facts.mysql_socket,
        "-u",
        L.BACKUP_MYSQL_USER,
        "--single-transaction",
        "--quick",
        "--no-tablespaces",
        "--databases",
        L.MYSQL_DATABASE,
    ]
    ctx.info("$ " + " ".join(argv) + " | gzip > " + target)
    partial = target + ".partial"
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with gzip.open(partial, "wb") as out:
        shutil.copyfileobj(proc.stdout, out)
    errors = proc.stderr.read().decode("utf-8", "replace")
    if proc.wait() != 0:
        os.unlink(partial)
        raise StepFailed("mysqldump exited %d: %s" % (proc.returncode, errors.strip()[-500:]))
    with open(partial, "rb") as fh:
        os.fsync(fh.fileno())
    os.rename(partial, target)
    fsync_directory(L.BACKUP_DIR)
    ctx.state.dump = target
    ctx.would("dump %s (%d bytes)" % (target, os.path.getsize(target)))


def prune_old_backups(ctx):
    keep_days = int(ctx.settings["backup_retention_days"])
    cutoff = time.time() - keep_days * 86400
    old = [path for path in dumps()[:-1] if os.path.getmtime(path) < cutoff]  # never the newest
    for path in old:
        ctx.remove(path)
    if not old:
        ctx.info("no dump older than %d days" % keep_days)


def upload_to_s3(ctx):
    uri = ctx.settings["backup_s3_uri"]
    if not uri:
        ctx.info("backup_s3_uri not set: dumps stay in %s" % L.BACKUP_DIR)
        return "skipped"
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    imds = Imds()
    try:
        creds = imds.role_credentials()
        region = imds.get("meta-data/placement/region") or ctx.settings["region"]
    except NoMetadata as exc:
        raise StepFailed("no instance metadata for S3 credentials: %s" % exc) from None
    if not creds:
        raise StepFailed("the instance has no IAM role: it cannot put to %s" % uri)
    ctx.add_secret(creds["secret_key"])
    if creds.get("token"):
        ctx.add_secret(creds["token"])
    key = "/".join(p for p in (prefix.strip("/"), os.path.basename(ctx.state.dump)) if p)
    with open(ctx.state.dump, "rb") as fh:
        data = fh.read()
    ctx.act(
        "put the dump to s3://%s/%s" % (bucket, key),
        put_s3_object,
        bucket,
        key,
        data,
        region,
        creds,
        endpoint=ctx.settings["aws_endpoint_url"] or None,
    )
    return None


def main(ctx):
    os.umask(0o077)  # a dump holds every row of the metadata database
    ctx.state = BackupState()
    return run_steps(ctx, [dump_database, prune_old_backups, upload_to_s3], "backup")


def restore(ctx, path=None):
    """Replace the metadata database by a dump (default: the newest), Airflow stopped meanwhile."""
    path = path or (dumps() or [None])[-1]
    if not path or not os.path.isfile(path):
        raise StepFailed("no dump to restore: none in %s (run airflow-ami-backup now)" % L.BACKUP_DIR)
    if os.geteuid() != 0:
        raise StepFailed("restore must run as root (sudo airflow-ami-backup restore)")

    def stop_airflow(ctx):
        for unit in (L.AIRFLOW_TARGET, *L.SERVICE_UNITS):
            systemd.stop(ctx, unit)

    def load_dump(ctx):
        wait_for_mysql(ctx)
        argv = ["mysql", "--protocol=socket", "-S", ctx.facts.mysql_socket, "-u", "root"]
        ctx.info("$ gunzip < %s | %s" % (path, " ".join(argv)))
        ctx.act("drop the airflow database", ctx.run, argv, input_text="DROP DATABASE IF EXISTS airflow;\n")
        with gzip.open(path, "rb") as dump:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
            shutil.copyfileobj(dump, proc.stdin)
            proc.stdin.close()
            errors = proc.stderr.read().decode("utf-8", "replace")
        if proc.wait() != 0:
            raise StepFailed("loading %s failed: %s" % (path, errors.strip()[-500:]))
        ctx.would("load %s" % path)

    def start_airflow(ctx):
        ctx.act("start %s" % L.AIRFLOW_TARGET, systemd.systemctl, ctx, "start", L.AIRFLOW_TARGET)

    return run_steps(ctx, [stop_airflow, load_dump, start_airflow], "restore")
