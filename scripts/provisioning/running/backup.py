"""`provision.py backup` (airflow-db-backup.service) and `provision.py restore`.

backup: a consistent dump of the metadata database (mysqldump
--single-transaction: one snapshot, no locks held against Airflow), gzipped into
BACKUP_DIR with a manifest beside it (deployment, Airflow version, schema
revision, time, sha256, row counts of the main tables), older dumps pruned past
backup_retention_days, and both put under backup_s3_uri/<deployment or
instance id>/ with the instance role's credentials (the manifest last: a
manifest names a whole dump). The timer ticks every few minutes; a tick dumps
once backup_interval_minutes have passed (`--when-due`). It runs as the airflow
OS user, which MySQL knows by socket as airflow_backup (read-only).

restore: as root. A dump (local, an s3:// URI, or `latest`: the deployment's
newest) is checked against its manifest (sha256; a dump of a newer Airflow than
this image's is refused), the live database is dumped first (a safety dump),
the dump loads into a scratch database and is swapped in only once it has
loaded, `airflow db migrate` runs when the dump is older, and the schema is
checked current. Anything failing after the swap swaps the old tables back.
At first boot (user data `restore`) the same runs before any Airflow service.
"""

import contextlib
import fcntl
import glob
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import time

from ..shared import contract, systemd
from ..shared import layout as L
from ..shared.airflowenv import service_env
from ..shared.awsapi import Imds, NoMetadata, get_s3_object, list_s3_keys, put_s3_object
from ..shared.mysqlctl import mysql_sql, wait_for_mysql
from ..shared.runner import StepFailed, fsync_directory, run_steps

DUMP_PREFIX = "airflow-"
DUMP_SUFFIX = ".sql.gz"
MANIFEST_SUFFIX = ".json"
SAFETY_PREFIX = "before-restore-"
# A dump made with --databases names the database: loaded elsewhere, those lines are left out.
DATABASE_STATEMENTS = (b"CREATE DATABASE ", b"USE `")


class BackupState(object):
    """What a backup step leaves for a later one."""

    def __init__(self):
        # dump_database: the dump it wrote, and its manifest (write_manifest)
        self.dump = None
        self.manifest = None


def dumps():
    """The dumps in BACKUP_DIR, oldest first (their names sort by time)."""
    return sorted(glob.glob(os.path.join(L.BACKUP_DIR, DUMP_PREFIX + "*" + DUMP_SUFFIX)))


def manifest_path(dump):
    return dump[: -len(DUMP_SUFFIX)] + MANIFEST_SUFFIX


def plan(ctx):
    """Where and how often this instance backs up: first boot's record (its user data),
    else the bake's settings; `owner` names its dumps in S3 (the deployment, else the instance)."""
    try:
        with open(L.DEPLOYMENT_RECORD) as fh:
            record = json.load(fh)
    except (OSError, ValueError):
        record = {}
    try:
        with open(L.FIRSTBOOT_MARKER) as fh:
            instance = json.load(fh).get("instance_id")
    except (OSError, ValueError):
        instance = None
    deployment = record.get("deployment")
    return {
        "deployment": deployment,
        "owner": deployment or instance or "unknown-instance",
        "backup_s3_uri": record.get("backup_s3_uri", ctx.settings["backup_s3_uri"]),
        "interval_minutes": record.get("backup_interval_minutes") or ctx.settings["backup_interval_minutes"],
    }


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def mysql_argv(ctx, user):
    return ["--protocol=socket", "-S", ctx.facts.mysql_socket, "-u", user]


def dump_to(ctx, target, user):
    """mysqldump of the airflow database (its tables, not the database itself, so it loads
    into any database) gzipped to `target`, written whole or not at all."""
    argv = ["mysqldump", *mysql_argv(ctx, user), "--single-transaction", "--quick", "--no-tablespaces"]
    argv.append(L.MYSQL_DATABASE)
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
    fsync_directory(os.path.dirname(target))


def due(ctx):
    """Is a dump due: none yet, or the newest older than the interval (half a tick early)?"""
    interval = int(plan(ctx)["interval_minutes"]) * 60
    found = dumps()
    age = time.time() - os.path.getmtime(found[-1]) if found else None
    if age is not None and age < interval - L.BACKUP_TICK_MINUTES * 30:
        ctx.info("newest dump is %d min old, the interval %d min: not due" % (age // 60, interval // 60))
        return False
    return True


def new_dump_path(prefix=DUMP_PREFIX):
    """A dump named after this second, never an existing one's name (a backup right after
    another in the same second waits for the next): the names sort by time."""
    while True:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        target = os.path.join(L.BACKUP_DIR, prefix + stamp + DUMP_SUFFIX)
        if not os.path.exists(target):
            return target
        time.sleep(1)


@contextlib.contextmanager
def one_at_a_time(ctx, wait):
    """Holds BACKUP_DIR's lock while a backup or a restore runs: the timer's tick, a manual
    `airflow-ami-backup now` and a restore may meet, and each would take the others' dump
    for a stale one. The lock is the directory's own (flock), as a lock file would belong to
    root or to airflow and the other could not open it. Yields False when another holds it
    and `wait` is False."""
    fd = os.open(L.BACKUP_DIR, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                yield False
                return
            ctx.info("a backup or restore is running: waiting for it to end")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield True
    finally:
        os.close(fd)


def dump_database(ctx):
    for stale in glob.glob(os.path.join(L.BACKUP_DIR, "*.partial")):
        ctx.remove(stale)  # a dump that was killed halfway (none other runs: one_at_a_time)
    target = new_dump_path()
    # By socket, as the airflow OS user (auth_socket): no password anywhere.
    dump_to(ctx, target, L.BACKUP_MYSQL_USER)
    ctx.state.dump = target
    ctx.would("dump %s (%d bytes)" % (target, os.path.getsize(target)))


def table_counts(ctx, user, database=L.MYSQL_DATABASE):
    """Rows of each counted table, and the schema revision (alembic_version)."""
    sql = " UNION ALL ".join(
        "SELECT '%s', COUNT(*) FROM `%s`.`%s`" % (t, database, t) for t in L.COUNTED_TABLES
    )
    argv = ["mysql", *mysql_argv(ctx, user), "--batch", "--skip-column-names", "-e"]
    rows = ctx.run([*argv, sql + ";"], quiet=True)[1]
    revision = ctx.run([*argv, "SELECT version_num FROM `%s`.alembic_version;" % database], quiet=True)[1]
    counts = {name: int(count) for name, count in (line.split("\t") for line in rows.splitlines())}
    return counts, revision.strip()


def write_manifest(ctx):
    """What the dump holds, beside it: the restore checks it, an upgrade compares its counts."""
    counts, revision = table_counts(ctx, L.BACKUP_MYSQL_USER)
    where = plan(ctx)
    manifest = {
        "dump": os.path.basename(ctx.state.dump),
        "deployment": where["deployment"],
        "owner": where["owner"],
        "airflow_version": ctx.settings["airflow_version"],
        "schema_revision": revision,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "sha256": sha256_of(ctx.state.dump),
        "size": os.path.getsize(ctx.state.dump),
        "rows": counts,
    }
    ctx.state.manifest = manifest_path(ctx.state.dump)
    ctx.write_file(ctx.state.manifest, json.dumps(manifest, indent=2, sort_keys=True) + "\n", 0o600)


def prune_old_backups(ctx):
    keep_days = int(ctx.settings["backup_retention_days"])
    cutoff = time.time() - keep_days * 86400
    old = [path for path in dumps()[:-1] if os.path.getmtime(path) < cutoff]  # never the newest
    for path in old:
        ctx.remove(path)
        if os.path.exists(manifest_path(path)):
            ctx.remove(manifest_path(path))
    if not old:
        ctx.info("no dump older than %d days" % keep_days)


def role_credentials(ctx):
    """(region, credentials) of the instance role, registered as secrets."""
    imds = Imds()
    try:
        creds = imds.role_credentials()
        region = imds.get("meta-data/placement/region") or ctx.settings["region"]
    except NoMetadata as exc:
        raise StepFailed("no instance metadata for S3 credentials: %s" % exc) from None
    if not creds:
        raise StepFailed("the instance has no IAM role: it cannot reach S3")
    ctx.add_secret(creds["secret_key"])
    if creds.get("token"):
        ctx.add_secret(creds["token"])
    return region, creds


def upload_to_s3(ctx):
    where = plan(ctx)
    if not where["backup_s3_uri"]:
        ctx.info("backup_s3_uri not set: dumps stay in %s" % L.BACKUP_DIR)
        return "skipped"
    bucket, prefix = contract.backup_location(where["backup_s3_uri"], where["owner"])
    region, creds = role_credentials(ctx)
    for path in (ctx.state.dump, ctx.state.manifest):
        key = prefix + os.path.basename(path)
        with open(path, "rb") as fh:
            data = fh.read()
        ctx.act(
            "put s3://%s/%s" % (bucket, key),
            put_s3_object,
            bucket,
            key,
            data,
            region,
            creds,
            endpoint=ctx.settings["aws_endpoint_url"] or None,
        )
    return None


@contextlib.contextmanager
def private_files():
    """New files for root only while it lasts (a dump holds every row of the metadata
    database), then the caller's umask back: first boot goes on after a restore, and a
    process-wide 077 left behind makes every later file and directory private."""
    previous = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(previous)


def main(ctx, when_due=False):
    """A backup; the timer's (`when_due`) skips while another backup or a restore runs,
    a manual one waits for it."""
    ctx.state = BackupState()
    with one_at_a_time(ctx, wait=not when_due) as mine:
        if not mine:
            ctx.info("a backup or restore is running: this tick skips")
            return 0
        if when_due and not due(ctx):
            return 0
        steps = [dump_database, write_manifest, prune_old_backups, upload_to_s3]
        with private_files():
            return run_steps(ctx, steps, "backup")


# ---- restore ----


class RestoreState(object):
    """What a restore step leaves for a later one."""

    def __init__(self, source, manage_services):
        self.source = source
        # Outside first boot, Airflow is stopped for the swap and started again.
        self.manage_services = manage_services
        # fetch_dump: the local dump and its manifest (None: a dump made before manifests)
        self.dump = None
        self.manifest = None
        # swap_in_the_restored_tables: the tables to put back if a later step fails
        self.swapped = False
        self.was_running = False


def fetch_dump(ctx):
    """The dump to restore, local: the newest here by default, an s3:// URI, or `latest`
    (the deployment's newest in backup_s3_uri), downloaded with its manifest."""
    state, source = ctx.state, ctx.state.source
    if not source:
        found = dumps()
        if not found:
            raise StepFailed("no dump to restore: none in %s (run airflow-ami-backup now)" % L.BACKUP_DIR)
        source = found[-1]
    if source != contract.RESTORE_LATEST and not source.startswith("s3://"):
        if not os.path.isfile(source):
            raise StepFailed("no dump %s" % source)
        state.dump = source
        state.manifest = read_manifest(manifest_path(source))
        return None
    region, creds = role_credentials(ctx)
    endpoint = ctx.settings["aws_endpoint_url"] or None
    if source == contract.RESTORE_LATEST:
        source = latest_dump_uri(ctx, region, creds, endpoint)
    bucket, _, key = source[len("s3://") :].partition("/")
    manifest = get_s3_object(
        bucket, key[: -len(DUMP_SUFFIX)] + MANIFEST_SUFFIX, region, creds, endpoint=endpoint
    )
    data = get_s3_object(bucket, key, region, creds, endpoint=endpoint)
    if data is None or manifest is None:
        raise StepFailed("%s: no such dump (with its manifest) in S3" % source)
    state.dump = os.path.join(L.BACKUP_DIR, "restoring-" + os.path.basename(key))
    ctx.write_file(state.dump, data, 0o600)
    state.manifest = json.loads(manifest.decode())
    ctx.info("fetched %s (%d bytes)" % (source, len(data)))
    return None


def latest_dump_uri(ctx, region, creds, endpoint):
    where = plan(ctx)
    if not where["backup_s3_uri"] or not where["deployment"]:
        raise StepFailed("restore latest needs a deployment and its backup_s3_uri")
    bucket, prefix = contract.backup_location(where["backup_s3_uri"], where["deployment"])
    manifests = sorted(
        k
        for k in list_s3_keys(bucket, prefix, region, creds, endpoint=endpoint)
        if k.endswith(MANIFEST_SUFFIX)
    )
    if not manifests:
        raise StepFailed("no backup of deployment %s in s3://%s/%s" % (where["deployment"], bucket, prefix))
    return "s3://%s/%s" % (bucket, manifests[-1][: -len(MANIFEST_SUFFIX)] + DUMP_SUFFIX)


def read_manifest(path):
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def version_tuple(text):
    return tuple(int(part) for part in text.split(".")[:3] if part.isdigit())


def check_the_dump(ctx):
    """sha256 as the manifest says, and an Airflow no newer than this image's: else nothing changes."""
    manifest, installed = ctx.state.manifest, ctx.settings["airflow_version"]
    if manifest is None:
        ctx.info("%s has no manifest (made before manifests): not checked" % ctx.state.dump)
        return None
    found = sha256_of(ctx.state.dump)
    if found != manifest["sha256"]:
        raise StepFailed(
            "%s is damaged: sha256 %s, its manifest says %s" % (ctx.state.dump, found, manifest["sha256"])
        )
    if version_tuple(manifest["airflow_version"]) > version_tuple(installed):
        raise StepFailed(
            "%s is of Airflow %s, newer than this image's %s: restore it on an image of %s or newer"
            % (ctx.state.dump, manifest["airflow_version"], installed, manifest["airflow_version"])
        )
    ctx.info(
        "%s: sha256 ok, Airflow %s (this image: %s)"
        % (ctx.state.dump, manifest["airflow_version"], installed)
    )
    return None


def stop_airflow(ctx):
    if not ctx.state.manage_services:
        return "skipped"
    ctx.state.was_running = systemd.is_active(ctx, L.SCHEDULER_UNIT)
    for unit in (L.AIRFLOW_TARGET, *L.SERVICE_UNITS):
        systemd.stop(ctx, unit)
    return None


def take_a_safety_dump(ctx):
    """The live database, dumped before anything replaces it."""
    wait_for_mysql(ctx)
    target = new_dump_path(SAFETY_PREFIX + DUMP_PREFIX)
    ctx.act("dump the live database to %s" % target, dump_to, ctx, target, "root")


def load_into_a_scratch_database(ctx):
    """Load the dump into MYSQL_RESTORE_DATABASE; the live database is not touched yet."""
    scratch = L.MYSQL_RESTORE_DATABASE
    mysql_sql(
        ctx, "DROP DATABASE IF EXISTS `%s`; CREATE DATABASE `%s` CHARACTER SET utf8mb4;" % (scratch, scratch)
    )
    argv = ["mysql", *mysql_argv(ctx, "root"), scratch]
    ctx.info("$ gunzip < %s | %s" % (ctx.state.dump, " ".join(argv)))
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    with gzip.open(ctx.state.dump, "rb") as dump:
        for line in dump:
            if not line.startswith(DATABASE_STATEMENTS):
                proc.stdin.write(line)
    proc.stdin.close()
    errors = proc.stderr.read().decode("utf-8", "replace")
    if proc.wait() != 0:
        mysql_sql(ctx, "DROP DATABASE IF EXISTS `%s`;" % scratch)
        raise StepFailed(
            "loading %s failed (the live database is as it was): %s" % (ctx.state.dump, errors.strip()[-500:])
        )
    ctx.would("load %s into %s" % (ctx.state.dump, scratch))


def tables_of(ctx, database):
    sql = "SELECT table_name FROM information_schema.tables WHERE table_schema = '%s';" % database
    return mysql_sql(ctx, sql, quiet=True).split()


def rename_all(ctx, moves):
    """One RENAME TABLE of every (database, table, to database): atomic, all or none."""
    if moves:
        pairs = ", ".join("`%s`.`%s` TO `%s`.`%s`" % (db, t, to, t) for db, t, to in moves)
        mysql_sql(ctx, "RENAME TABLE %s;" % pairs, quiet=True)


def swap_in_the_restored_tables(ctx):
    """The live tables go to MYSQL_REPLACED_DATABASE, the restored ones take their place."""
    live, scratch, replaced = L.MYSQL_DATABASE, L.MYSQL_RESTORE_DATABASE, L.MYSQL_REPLACED_DATABASE
    mysql_sql(
        ctx,
        "DROP DATABASE IF EXISTS `%s`; CREATE DATABASE `%s` CHARACTER SET utf8mb4;" % (replaced, replaced),
    )
    moves = [(live, t, replaced) for t in tables_of(ctx, live)]
    moves += [(scratch, t, live) for t in tables_of(ctx, scratch)]
    ctx.act("swap the restored tables into %s" % live, rename_all, ctx, moves)
    ctx.state.swapped = True
    mysql_sql(ctx, "DROP DATABASE IF EXISTS `%s`;" % scratch)


def airflow(ctx, *args):
    return ctx.run([L.AIRFLOW_BIN, *args], env=service_env(ctx), user=L.AIRFLOW_USER, cwd=L.AIRFLOW_HOME)


def migrate_an_older_dump(ctx):
    """`airflow db migrate` when the dump comes from an older Airflow (or says not which)."""
    manifest = ctx.state.manifest
    if manifest and version_tuple(manifest["airflow_version"]) == version_tuple(
        ctx.settings["airflow_version"]
    ):
        return "skipped"
    ctx.act(
        "migrate the restored schema to Airflow %s" % ctx.settings["airflow_version"],
        airflow,
        ctx,
        "db",
        "migrate",
    )
    return None


def check_the_schema_is_current(ctx):
    rc, out = ctx.run(
        [L.AIRFLOW_BIN, "db", "check-migrations", "-t", "0"],
        check=False,
        env=service_env(ctx),
        user=L.AIRFLOW_USER,
        cwd=L.AIRFLOW_HOME,
    )
    if rc != 0:
        raise StepFailed("the restored schema is not current after the migration: %s" % out.strip()[-300:])


def drop_the_replaced_tables(ctx):
    mysql_sql(ctx, "DROP DATABASE IF EXISTS `%s`;" % L.MYSQL_REPLACED_DATABASE)
    ctx.state.swapped = False


def start_airflow(ctx):
    if not ctx.state.manage_services:
        return "skipped"
    ctx.act("start %s" % L.AIRFLOW_TARGET, systemd.systemctl, ctx, "start", L.AIRFLOW_TARGET)
    return None


def record_the_restore(ctx):
    record = {
        "source": ctx.state.source or ctx.state.dump,
        "sha256": (ctx.state.manifest or {}).get("sha256"),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    ctx.write_file(L.RESTORED_RECORD, json.dumps(record, indent=2, sort_keys=True) + "\n", 0o644)


RESTORE_STEPS = [
    fetch_dump,
    check_the_dump,
    stop_airflow,
    take_a_safety_dump,
    load_into_a_scratch_database,
    swap_in_the_restored_tables,
    migrate_an_older_dump,
    check_the_schema_is_current,
    drop_the_replaced_tables,
    start_airflow,
    record_the_restore,
]


def swap_back(ctx):
    """After a failure past the swap: the tables that were live go back."""
    live, replaced = L.MYSQL_DATABASE, L.MYSQL_REPLACED_DATABASE
    restored = [(live, t, L.MYSQL_RESTORE_DATABASE) for t in tables_of(ctx, live)]
    mysql_sql(ctx, "CREATE DATABASE IF NOT EXISTS `%s`;" % L.MYSQL_RESTORE_DATABASE)
    rename_all(ctx, restored + [(replaced, t, live) for t in tables_of(ctx, replaced)])
    mysql_sql(
        ctx,
        "DROP DATABASE IF EXISTS `%s`; DROP DATABASE IF EXISTS `%s`;" % (L.MYSQL_RESTORE_DATABASE, replaced),
    )
    ctx.info("the tables that were live are back; the failed restore left nothing behind")


def restore(ctx, source=None, manage_services=True):
    """Replace the metadata database by a dump (see the module's docstring); 0 when done."""
    if os.geteuid() != 0:
        raise StepFailed("restore must run as root (sudo airflow-ami-backup restore)")
    ctx.state = RestoreState(source, manage_services)
    with one_at_a_time(ctx, wait=True), private_files():
        status = run_steps(ctx, RESTORE_STEPS, "restore")
        if status != 0 and ctx.state.swapped:
            swap_back(ctx)
    if status != 0 and ctx.state.was_running:
        systemd.systemctl(ctx, "start", L.AIRFLOW_TARGET)
    return status
