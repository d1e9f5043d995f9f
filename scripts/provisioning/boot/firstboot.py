"""First boot of an instance (airflow-firstboot.service): per-instance secrets.

It runs at every boot and decides from the record (/var/lib/airflow-ami/
firstboot.json, written last) and the secrets already on disk:

- done: the record is for this instance and every secret is there: nothing to do.
- complete: no record yet (a fresh image, or a first boot killed halfway):
  secrets that exist are kept, only missing ones are made.
- rotate: the record is for another instance (an image made from a used one):
  new secrets, the new fernet key in front of the old one until
  `airflow rotate-fernet-key` has re-encrypted every value.

A named deployment (user data `deployment`, or a cluster) keeps its secrets in the
secret store (deployment.py): its first instance makes and stores them, every
later one, and an image of a used one, takes them from there; only what is per
instance (the database account's password, the API certificate) is its own.

Once made, secrets are never thrown away: without an answer from IMDS (retried
for about a minute) the identity is unknown, not new, and what exists is kept.

Its slowest work, the admin user and aws_default (an Airflow process), is left to
airflow-firstboot-admin.service (admin_main), which runs beside the services' start.
"""

import json
import os
import shutil
import socket
import tempfile
import time
from urllib.parse import unquote, urlsplit

from ..running import backup
from ..shared import layout as L
from ..shared import systemd
from ..shared.airflowenv import BROKER_URL_VARIABLE, recorded_role, service_env
from ..shared.awsapi import Imds, NoMetadata, put_secretsmanager_secret, put_ssm_parameter
from ..shared.contract import STANDALONE, BadUserData, parse_user_data, task_logs_location
from ..shared.envfile import read_env_file
from ..shared.inifile import set_options
from ..shared.mysqlctl import mysql_sql, schema_revision, wait_for_mysql
from ..shared.runner import StepFailed, log, run_steps
from ..shared.secretgen import alphanumeric, env_file_line, fernet_key, sql_string, sqlalchemy_mysql_url
from .cluster import ROLE_SECRETS, celery_secret_lines, redis_conf, role_env
from .deployment import (
    CLUSTER_SECRETS,
    DEPLOYMENT_SECRETS,
    Store,
    create_secrets,
    document_of,
    put_controller,
    put_worker_secrets,
    read_controller,
    read_secrets,
    read_worker_secrets,
    secrets_of,
)
from .sizing import (
    api_workers_for,
    broker_memory_mib_for,
    buffer_pool_mib_for,
    memory_limit_mib,
    resolve_parallelism,
)
from .tlscert import openssl_argv, request_config, subject_alt_names

# One Airflow process for all database work at first boot: importing Airflow costs
# several seconds, so the schema check, the admin user and the connection share it.
# Only when the schema is not the bake's (an emptied database): migrate it before any service.
SCHEMA_SCRIPT = r"""
from airflow.utils import db
try:
    db.check_migrations(1)
    print("schema is current")
except TimeoutError:
    db.upgradedb()
    print("schema migrated")
"""

# The API server syncs FAB's roles and permissions as it starts, beside the admin step's own
# sync: the one that loses the race gets a duplicate key (MySQL 1062) or a deadlock (1213)
# and stops; a second try finds the rows made. A failed admin step would fail the
# dag-processor's start for good (it requires the step), so the race is tried again here.
FAB_SYNC_RACES = ("IntegrityError", "Deadlock found")
ADMIN_ATTEMPTS = 3

# airflow-firstboot-admin.service's one Airflow process; its secret comes on stdin.
ADMIN_SCRIPT = r"""
import json, sys
data = json.loads(sys.stdin.read())
from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder
with get_application_builder() as appbuilder:
    sm = appbuilder.sm
    role = sm.find_role("Admin")
    if role is None:
        sm.sync_roles()
        role = sm.find_role("Admin")
    user = sm.find_user(username=data["username"])
    if user is None:
        user = sm.add_user(data["username"], "Airflow", "Admin", data["email"], role,
                           data["password"])
        if not user:
            raise SystemExit("could not create the admin user")
        print("created admin user %s" % data["username"])
    else:
        sm.reset_password(user.id, data["password"])
        if role not in user.roles:
            user.roles.append(role)
            sm.update_user(user)
        print("reset the password of admin user %s" % data["username"])

from airflow.models import Connection
from airflow.utils.session import create_session
with create_session() as session:
    conn = session.query(Connection).filter(Connection.conn_id == "aws_default").one_or_none()
    if conn is None:
        conn = Connection(conn_id="aws_default", conn_type="aws")
        session.add(conn)
        extra = {}
    else:
        try:
            extra = conn.extra_dejson
        except Exception:
            extra = {}
    extra["region_name"] = data["region"]
    if data["endpoint_url"]:
        extra["endpoint_url"] = data["endpoint_url"]
    conn.set_extra(json.dumps(extra))
    print("aws_default region_name=%s" % data["region"])
"""


# How long a boot waits for the metadata service before calling the identity unknown.
IMDS_PATIENCE = 60
# secrets.env: the names of the secrets in it, by environment variable.
SECRET_VARIABLES = {
    "fernet_key": "AIRFLOW__CORE__FERNET_KEY",
    "jwt_secret": "AIRFLOW__API_AUTH__JWT_SECRET",
    "api_secret_key": "AIRFLOW__API__SECRET_KEY",
}
DB_URL_VARIABLE = "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"
# IMDS meta-data an API certificate names, where the instance has them.
CERTIFICATE_METADATA = (
    ("DNS", "local-hostname"),
    ("DNS", "public-hostname"),
    ("IP", "local-ipv4"),
    ("IP", "public-ipv4"),
)
SECRET_MAKERS = {
    "db_password": lambda: alphanumeric(32),
    "fernet_key": fernet_key,
    "jwt_secret": lambda: alphanumeric(64),
    "api_secret_key": lambda: alphanumeric(64),
    "admin_password": lambda: alphanumeric(24),
    "broker_password": lambda: alphanumeric(32),
}
# How long a worker waits for its controller to store the cluster's secrets.
SHARED_SECRETS_PATIENCE = 600
SHARED_SECRETS_POLL = 5


class FirstbootState(object):
    """What a first-boot step leaves for a later one."""

    def __init__(self):
        # read_instance_identity: the IMDSv2 client (None without metadata) and what it
        # said; identity_known is False when IMDS never answered
        self.imds = None
        self.instance_id = None
        self.region = None
        self.imds_version = "none"
        self.identity_known = False
        self.private_ip = None
        # read_role: the userdata.Role of this instance
        self.role = STANDALONE
        # read_existing_secrets: secrets already on disk by name, fernet keys beyond the
        # first (a rotation not yet finished), and the last record
        self.existing = {}
        self.old_fernet_keys = []
        self.record = None
        # decide_what_to_do: "complete" or "rotate" ("done" stops the run)
        self.mode = None
        # size_to_the_instance: the [core] parallelism written to airflow.cfg, and the
        # instance's memory in MiB
        self.parallelism = None
        self.mem_mib = None
        # fetch_deployment_secrets: the names taken from the deployment's store, and
        # whether this instance is the deployment's first (it stores what it makes)
        self.stored = set()
        self.first_of_deployment = False
        # generate_secrets: the secrets this boot uses, by name
        self.generated = {}


def machine_id():
    try:
        with open("/etc/machine-id") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def read_instance_identity(ctx):
    """Instance id and region from IMDSv2, waiting about a minute for it to answer."""
    state = ctx.state
    imds = Imds(patience=IMDS_PATIENCE)
    try:
        doc = json.loads(imds.get("dynamic/instance-identity/document") or "{}")
        state.instance_id = doc.get("instanceId") or imds.get("meta-data/instance-id")
        state.region = doc.get("region") or ctx.settings["region"]
    except (NoMetadata, ValueError) as exc:
        state.region = ctx.settings["region"]
        ctx.info("no instance metadata (%s): the identity is unknown" % exc)
        return
    state.imds, state.imds_version, state.identity_known = imds, "v2", True
    state.private_ip = doc.get("privateIp") or imds.get("meta-data/local-ipv4")
    ctx.info("instance %s in %s (IMDSv2)" % (state.instance_id, state.region))


def read_role(ctx):
    """standalone, controller or worker: from the user data (README "Scaling out")."""
    state = ctx.state
    if not state.identity_known:
        # No metadata, no user data: the role written before stands (ROLE_ENV still holds it).
        recorded = recorded_role()
        if recorded and recorded != "standalone":
            raise StepFailed("no instance metadata: a %s cannot read its cluster's user data" % recorded)
        return None
    try:
        state.role = parse_user_data(state.imds.get("user-data"))
    except BadUserData as exc:
        raise StepFailed(str(exc), exit_status=L.BAD_USER_DATA_EXIT) from None
    if state.role.role != "standalone" and ctx.settings["api_tls"] != "none":
        raise StepFailed(
            "user data role %s: a cluster needs api_tls none (workers reach the controller's"
            " execution API over the security group); bake without api_tls" % state.role.role,
            exit_status=L.BAD_USER_DATA_EXIT,
        )
    ctx.info(
        "role %s%s" % (state.role.role, " of cluster %s" % state.role.cluster if state.role.cluster else "")
    )
    return None


def follow_the_controller(ctx):
    """A worker goes where its cluster's store says the controller is (a replaced controller
    has a new address); the user data's address until the controller has said."""
    role = ctx.state.role
    if role.role != "worker" or not ctx.state.identity_known:
        return "skipped"
    address = read_controller(store_access(ctx), role.deployment)
    if address and address != role.controller:
        ctx.info(
            "the controller of %s is at %s now (user data: %s)" % (role.deployment, address, role.controller)
        )
        ctx.state.role = role._replace(controller=address)
    return None


def write_role(ctx):
    """ROLE_DIR/<role> (which units run) and ROLE_ENV (the role's Airflow settings)."""
    role = ctx.state.role.role
    ctx.ensure_dir(L.ROLE_DIR, 0o755, "root", "root")
    for other in L.ROLES:
        if other != role:
            ctx.remove(os.path.join(L.ROLE_DIR, other))
    ctx.write_file(os.path.join(L.ROLE_DIR, role), role + "\n", 0o644, "root", "root")
    try:
        env = role_env(
            ctx.state.role, int(ctx.settings["api_port"]), task_logs_location(ctx.state.role, ctx.settings)
        )
    except ValueError as exc:
        # The checks passed a value the env file cannot hold: stop, never restart on it.
        raise StepFailed("user data cannot be rendered: %s" % exc, exit_status=L.BAD_USER_DATA_EXIT) from None
    ctx.write_file(L.ROLE_ENV, env, 0o644, "root", "root")


def read_existing_secrets(ctx):
    """Secrets already on disk (kept, whatever else happens) and the last record."""
    state = ctx.state
    env = read_env_file(L.SECRETS_ENV) if os.path.exists(L.SECRETS_ENV) else {}
    for name, variable in SECRET_VARIABLES.items():
        if env.get(variable):
            state.existing[name] = ctx.add_secret(env[variable])
    if state.existing.get("fernet_key"):
        keys = state.existing["fernet_key"].split(",")
        state.existing["fernet_key"], state.old_fernet_keys = keys[0], keys[1:]
        for key in keys:
            ctx.add_secret(key)
    for name, variable in (("db_password", DB_URL_VARIABLE), ("broker_password", BROKER_URL_VARIABLE)):
        password = urlsplit(env.get(variable, "")).password
        if password:
            state.existing[name] = ctx.add_secret(unquote(password))
    if os.path.exists(L.ADMIN_PASSWORD_FILE):
        with open(L.ADMIN_PASSWORD_FILE) as fh:
            admin = fh.read().strip()
        if admin:
            state.existing["admin_password"] = ctx.add_secret(admin)
    state.record = read_record()
    ctx.info(
        "on disk: %s; record for %s"
        % (
            ", ".join(sorted(state.existing)) or "no secrets",
            (state.record or {}).get("instance_id", "nobody"),
        )
    )


def read_record():
    try:
        with open(L.FIRSTBOOT_MARKER) as fh:
            record = json.load(fh)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def decide_what_to_do(ctx):
    """done, complete (keep what exists, make what is missing) or rotate (a new identity)."""
    state = ctx.state
    recorded = (state.record or {}).get("instance_id")
    if not state.identity_known:
        # IMDS silent: the instance is not new, it just cannot say who it is.
        state.instance_id = recorded or "machine-" + machine_id()
    complete = set(ROLE_SECRETS[state.role.role]) <= set(state.existing) and not state.old_fernet_keys
    if recorded == state.instance_id and complete:
        ctx.info("first boot already done for %s at %s" % (recorded, state.record.get("time")))
        return "stop"
    if recorded and recorded != state.instance_id and state.existing:
        state.mode = "rotate"
        ctx.info("the record is for %s, this is %s: rotating every secret" % (recorded, state.instance_id))
    else:
        state.mode = "complete"
        ctx.info("completing first boot for %s, keeping the secrets on disk" % state.instance_id)
    return None


# Where a container (the local cloud's instances) finds its memory limit: cgroup v2, v1.
CGROUP_MEMORY_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def instance_memory_mib():
    with open("/proc/meminfo") as fh:
        meminfo = fh.read()
    limits = []
    for path in CGROUP_MEMORY_LIMITS:
        if os.path.exists(path):
            with open(path) as fh:
                limits.append(fh.read())
    return memory_limit_mib(meminfo, limits)


def size_to_the_instance(ctx):
    """Set [core] parallelism (unless pinned) and the api-server's workers in airflow.cfg
    from the instance's CPUs and memory."""
    setting = ctx.settings["parallelism"]
    mem = ctx.state.mem_mib = instance_memory_mib()
    cpus = len(os.sched_getaffinity(0))
    slots = resolve_parallelism(setting, cpus, mem)
    workers = api_workers_for(cpus, mem)
    ctx.state.parallelism = slots
    ctx.info(
        "%s CPUs, %d MiB -> parallelism %d (setting %s), %d api-server worker(s)"
        % (cpus, mem, slots, setting, workers)
    )
    with open(L.AIRFLOW_CFG) as fh:
        text = fh.read()
    new = set_options(text, "core", {"parallelism": str(slots), "max_active_tasks_per_dag": str(slots)})
    new = set_options(new, "api", {"workers": str(workers)})
    ctx.write_file(L.AIRFLOW_CFG, new, 0o644, "root", "root")


def size_mysql_buffer_pool(ctx):
    """innodb_buffer_pool_size to the instance's memory: resized online and persisted
    (mysqld-auto.cnf in the data directory), so MySQL needs no restart."""
    mib = buffer_pool_mib_for(ctx.state.mem_mib)
    wait_for_mysql(ctx)
    ctx.act(
        "set innodb_buffer_pool_size to %d MiB" % mib,
        mysql_sql,
        ctx,
        "SET PERSIST innodb_buffer_pool_size = %d;" % (mib << 20),
    )


def role_credentials(ctx):
    """The instance role's keys (registered as secrets), or None without a role."""
    try:
        creds = ctx.state.imds.role_credentials() if ctx.state.imds else None
    except NoMetadata as exc:
        ctx.info("no role credentials: %s" % exc)
        return None
    for key in ("secret_key", "token"):
        if creds and creds.get(key):
            ctx.add_secret(creds[key])
    return creds


def deployment_secret_names(role):
    return CLUSTER_SECRETS if role.role != "standalone" else DEPLOYMENT_SECRETS


def store_access(ctx):
    """The deployment's secret store, reached with the instance role."""
    kind = ctx.settings["secret_store"]
    creds = role_credentials(ctx)
    if not creds:
        raise StepFailed(
            "deployment %s keeps its secrets in %s: the instance needs a role that may read them"
            % (ctx.state.role.deployment, kind)
        )
    return Store(kind, ctx.state.region, creds, ctx.settings["aws_endpoint_url"] or None)


def write_deployment_record(ctx):
    """What the backups follow (DEPLOYMENT_RECORD): the deployment, and where and how often
    to dump: the user data's, else the bake's settings; and where its task logs go, which
    an upgrade's new instance keeps."""
    role = ctx.state.role
    if role.role == "worker":
        return "skipped"
    record = {
        "deployment": role.deployment,
        "backup_s3_uri": role.backup_s3_uri or ctx.settings["backup_s3_uri"],
        "backup_interval_minutes": role.backup_interval_minutes or ctx.settings["backup_interval_minutes"],
        "task_logs_s3_uri": task_logs_location(ctx.state.role, ctx.settings),
    }
    ctx.write_file(
        L.DEPLOYMENT_RECORD, json.dumps(record, indent=2, sort_keys=True) + "\n", 0o644, "root", "root"
    )
    return None


def fetch_deployment_secrets(ctx):
    """A named deployment's secrets from its store: they win over what is on disk. None
    stored yet: a worker waits for its controller; a standalone instance or a controller
    is the deployment's first and stores what it makes."""
    state = ctx.state
    role = state.role
    if not role.deployment:
        return "skipped"
    store = store_access(ctx)
    deadline = time.time() + (SHARED_SECRETS_PATIENCE if role.role == "worker" else 0)
    read = read_worker_secrets if role.role == "worker" else read_secrets
    document = read(store, role.deployment)
    while document is None and time.time() < deadline:
        time.sleep(SHARED_SECRETS_POLL)
        document = read(store, role.deployment)
    if document is None:
        if role.role == "worker":
            raise StepFailed(
                "no secrets of cluster %s after %d s: is its controller up, and may this"
                " instance's role read them?" % (role.deployment, SHARED_SECRETS_PATIENCE)
            )
        state.first_of_deployment = True
        ctx.info("deployment %s has no secrets stored yet: this instance makes them" % role.deployment)
        return None
    if role.role == "worker":
        names = ROLE_SECRETS["worker"]
        missing = [n for n in names if not document.get(n)]
        if missing:
            raise StepFailed(
                "the workers' secrets of cluster %s lack %s: its controller writes them at"
                " its next boot" % (role.deployment, ", ".join(missing))
            )
        secrets, keys = {n: document[n] for n in names}, []
    else:
        names = [n for n in deployment_secret_names(role) if n in ROLE_SECRETS[role.role]]
        secrets, keys = secrets_of(document, names)
    for value in [*secrets.values(), *keys]:
        ctx.add_secret(value)
    state.existing.update(secrets)
    state.stored = set(secrets)
    if "fernet_key" in ROLE_SECRETS[role.role]:
        state.existing["fernet_key"], state.old_fernet_keys = keys[0], keys[1:]
        state.stored.add("fernet_key")
    ctx.info("deployment %s: %s from its store" % (role.deployment, ", ".join(sorted(state.stored))))
    return None


def publish_deployment_secrets(ctx):
    """The deployment's first instance stores what it made (create-if-absent: another first
    instance that was quicker wins, and this boot stops to adopt its secrets at the next);
    a controller says where it is."""
    state = ctx.state
    role = state.role
    if not role.deployment or role.role == "worker":
        return "skipped"
    store = store_access(ctx)
    if state.first_of_deployment:
        names = deployment_secret_names(role)
        document = document_of(
            state.generated, [state.generated["fernet_key"], *state.old_fernet_keys], names
        )
        made = ctx.act(
            "store the secrets of deployment %s in %s" % (role.deployment, store.kind),
            create_secrets,
            store,
            role.deployment,
            document,
        )
        if made is False:
            raise StepFailed(
                "another instance of deployment %s stored its secrets first: this boot stops,"
                " the next one takes them" % role.deployment
            )
    if role.role == "controller":
        ctx.act(
            "give the workers of %s what they hold (%s)"
            % (role.deployment, ", ".join(ROLE_SECRETS["worker"])),
            put_worker_secrets,
            store,
            role.deployment,
            {name: state.generated[name] for name in ROLE_SECRETS["worker"]},
        )
        ctx.act(
            "say where the controller of %s is (%s)" % (role.deployment, state.private_ip),
            put_controller,
            store,
            role.deployment,
            state.private_ip,
        )
    return None


def write_redis_config(ctx):
    """The controller's broker: its password, the private address, and a restart to take them."""
    state = ctx.state
    if state.role.role != "controller":
        return "skipped"
    user = ctx.facts.redis_user
    ctx.ensure_dir(os.path.dirname(L.REDIS_CONF), 0o750, "root", user)
    text = redis_conf(
        state.generated["broker_password"],
        state.private_ip or "127.0.0.1",
        user,
        broker_memory_mib_for(state.mem_mib),
    )
    if ctx.write_file(L.REDIS_CONF, text, 0o640, "root", user, secret=True):
        ctx.act(
            "restart %s" % ctx.facts.redis_unit, systemd.systemctl, ctx, "try-restart", ctx.facts.redis_unit
        )
    return None


def stop_mysql_on_a_worker(ctx):
    """A worker has no database: MySQL, started before the role was known, stops for good."""
    if ctx.state.role.role != "worker":
        return "skipped"
    systemd.stop(ctx, ctx.facts.mysql_unit)
    return None


def on_the_database_node(step):
    """``step`` only where the metadata database is (not on a worker)."""

    def run(ctx):
        if ctx.state.role.role == "worker":
            return "skipped"
        return step(ctx)

    run.__name__, run.__doc__ = step.__name__, step.__doc__
    return run


def generate_secrets(ctx):
    """Make what is missing (complete) or all anew (rotate, the old fernet key kept behind);
    a named deployment's stored secrets are kept either way."""
    state = ctx.state
    keep = {n: v for n, v in state.existing.items() if n in state.stored or state.mode != "rotate"}
    if state.role.role == "worker":
        # A worker makes nothing: it holds what its controller stored, of what it needs.
        state.generated = {n: v for n, v in state.existing.items() if n in ROLE_SECRETS["worker"]}
        state.old_fernet_keys = []
        return
    made = [name for name in ROLE_SECRETS[state.role.role] if name not in keep]
    state.generated = dict(keep)
    for name in made:
        state.generated[name] = ctx.add_secret(SECRET_MAKERS[name]())
    if state.mode == "rotate" and "fernet_key" in state.existing and "fernet_key" not in state.stored:
        # Values encrypted with the old key stay readable until rotate-fernet-key is done.
        state.old_fernet_keys = [state.existing["fernet_key"], *state.old_fernet_keys]
    if made:
        ctx.would("generate %s" % ", ".join(made))


def rekey_mysql_user(ctx):
    """Give airflow@localhost the new password (caching_sha2_password)."""
    wait_for_mysql(ctx)
    pw = sql_string(ctx.state.generated["db_password"])
    ctx.act(
        "give airflow@localhost its new password",
        mysql_sql,
        ctx,
        "\n".join(
            [
                "CREATE USER IF NOT EXISTS 'airflow'@'localhost' IDENTIFIED BY %s;" % pw,
                "ALTER USER 'airflow'@'localhost' IDENTIFIED WITH caching_sha2_password BY %s;" % pw,
                "GRANT ALL PRIVILEGES ON airflow.* TO 'airflow'@'localhost';",
            ]
        ),
    )


def write_secrets_env(ctx):
    """Write /etc/airflow/secrets.env (0600 root) for the units and the CLI wrapper."""
    generated, role = ctx.state.generated, ctx.state.role
    values = dict(generated)
    if "fernet_key" in generated:
        values["fernet_key"] = ",".join([generated["fernet_key"], *ctx.state.old_fernet_keys])
    database = []
    if role.role != "worker":
        url = sqlalchemy_mysql_url(
            L.MYSQL_USER, generated["db_password"], L.MYSQL_DATABASE, unix_socket=ctx.facts.mysql_socket
        )
        database = [env_file_line(DB_URL_VARIABLE, ctx.add_secret(url))]
    broker = celery_secret_lines(role, generated.get("broker_password"))
    for line in broker:
        ctx.add_secret(line.split("=", 1)[1].strip().strip("'"))
    content = "".join(
        [
            "# Generated at first boot by airflow-firstboot.service; root only.\n",
            *database,
            *broker,
            *(
                env_file_line(variable, values[name])
                for name, variable in SECRET_VARIABLES.items()
                if name in ROLE_SECRETS[role.role]
            ),
        ]
    )
    ctx.write_file(L.SECRETS_ENV, content, 0o600, "root", "root", secret=True)


def restore_requested_dump(ctx):
    """User data `restore`: the dump loads before any Airflow service starts (once: a boot
    after a completed restore does not load it again)."""
    source = ctx.state.role.restore
    if not source:
        return "skipped"
    done = backup.read_manifest(L.RESTORED_RECORD) or {}
    if done.get("source") == source:
        ctx.info("%s was restored at %s" % (source, done.get("time")))
        return "skipped"
    if backup.restore(ctx.another(), source, manage_services=False) != 0:
        # Never serve the image's empty database in its place: with no secrets.env no Airflow
        # unit starts. First boot tries again (Restart=on-failure) and writes it anew.
        ctx.remove(L.SECRETS_ENV)
        raise StepFailed(
            "restoring %s failed (its lines above say why); no Airflow service starts until"
            " first boot restores it" % source
        )
    return None


def check_the_schema(ctx):
    """The schema as the bake migrated it (its alembic revision, read with the mysql client),
    or else migrated now, before any service: an Airflow process only when it is needed."""
    baked = read_text(L.SCHEMA_REVISION_RECORD).strip()
    found = schema_revision(ctx, L.MYSQL_DATABASE)
    if baked and found == baked:
        ctx.info("schema is current (revision %s, migrated at bake time)" % found)
        return None
    out = ctx.act(
        "check the schema (revision %s, the bake's %s) and migrate it"
        % (found or "none", baked or "unknown"),
        ctx.run,
        [L.VENV + "/bin/python", "-c", SCHEMA_SCRIPT],
        env=service_env(ctx),
        user=L.AIRFLOW_USER,
        cwd=L.AIRFLOW_HOME,
    )[1]
    for line in out.splitlines():
        if line.startswith("schema"):
            ctx.info(line)
    return None


def leave_the_admin_to_its_unit(ctx):
    """The admin user and aws_default's region take an Airflow process (about 4 s): their unit
    (FIRSTBOOT_ADMIN_UNIT) sets them beside the services' start, and the dag-processor waits
    for it, so the instance reports healthy only once its admin can log in."""
    pending = {"region": ctx.state.region, "endpoint_url": ctx.settings["aws_endpoint_url"] or ""}
    ctx.write_file(L.ADMIN_PENDING, json.dumps(pending, sort_keys=True) + "\n", 0o600, "root", "root")
    # At boot its start is queued already; a first boot run again by hand runs it again here.
    systemd.systemctl(ctx, "restart", "--no-block", L.FIRSTBOOT_ADMIN_UNIT)


def set_the_admin_and_aws_default(ctx):
    """Create (or reset the password of) the FAB admin user and set aws_default's region: one
    Airflow process, as the airflow user, the password on its standard input."""
    pending = json.loads(read_text(L.ADMIN_PENDING))
    password = read_text(L.ADMIN_PASSWORD_FILE).strip()
    payload = json.dumps(
        {
            "username": ctx.settings["admin_username"],
            "email": "%s@localhost" % ctx.settings["admin_username"],
            "password": ctx.add_secret(password),
            "region": pending["region"],
            "endpoint_url": pending["endpoint_url"],
        }
    )
    for attempt in range(1, ADMIN_ATTEMPTS + 1):
        try:
            out = ctx.act(
                "set the admin user and aws_default's region",
                ctx.run,
                [L.VENV + "/bin/python", "-c", ADMIN_SCRIPT],
                input_text=payload,
                env=service_env(ctx),
                user=L.AIRFLOW_USER,
                cwd=L.AIRFLOW_HOME,
            )[1]
            break
        except StepFailed as exc:
            if attempt == ADMIN_ATTEMPTS or not any(race in str(exc) for race in FAB_SYNC_RACES):
                raise
            ctx.info("the API server synced FAB's permissions at the same time: try %d" % (attempt + 1))
            time.sleep(attempt)
    for line in out.splitlines():
        if line.startswith(("created", "reset", "aws_default")):
            ctx.info(line)
    ctx.remove(L.ADMIN_PENDING)


def read_text(path):
    try:
        with open(path) as fh:
            return fh.read()
    except OSError:
        return ""


def reencrypt_with_the_new_fernet_key(ctx):
    """With old fernet keys behind the new one: re-encrypt every value, then drop them. A
    named deployment's old keys are its store's: only an explicit rotation drops them."""
    if not ctx.state.old_fernet_keys or "fernet_key" in ctx.state.stored:
        return "skipped"
    ctx.act(
        "re-encrypt connections, variables and triggers with the new fernet key",
        ctx.run,
        [L.AIRFLOW_BIN, "rotate-fernet-key"],
        env=service_env(ctx),
        user=L.AIRFLOW_USER,
        cwd=L.AIRFLOW_HOME,
    )
    ctx.state.old_fernet_keys = []
    write_secrets_env(ctx)
    return None


def write_admin_password_file(ctx):
    """Write the admin password to /etc/airflow/admin-password (0600 root)."""
    ctx.write_file(
        L.ADMIN_PASSWORD_FILE,
        ctx.state.generated["admin_password"] + "\n",
        0o600,
        "root",
        "root",
        secret=True,
    )


def store_admin_password(ctx):
    """Also store the admin password in SSM / Secrets Manager when asked and allowed."""
    store = ctx.settings["admin_password_store"]
    if store in ("", "none", None):
        ctx.info("admin_password_store is none: password only in %s" % L.ADMIN_PASSWORD_FILE)
        return "skipped"
    if ctx.state.imds is None:
        ctx.info(
            "no instance metadata: cannot reach %s, password only in %s" % (store, L.ADMIN_PASSWORD_FILE)
        )
        return "skipped"
    creds = role_credentials(ctx)
    if not creds:
        ctx.info("instance has no IAM role: skipping %s" % store)
        return "skipped"
    name = ctx.settings["admin_password_name"]
    endpoint = ctx.settings["aws_endpoint_url"] or None
    try:
        if store == "ssm":
            put_ssm_parameter(name, ctx.state.generated["admin_password"], ctx.state.region, creds, endpoint)
        elif store == "secretsmanager":
            put_secretsmanager_secret(
                name, ctx.state.generated["admin_password"], ctx.state.region, creds, endpoint
            )
        else:
            raise StepFailed("unknown admin_password_store %r" % store)
    except OSError as exc:
        # the role may not allow it: the password is still in the root-only file
        ctx.info(
            "could not store the admin password in %s (%s); it is in %s" % (store, exc, L.ADMIN_PASSWORD_FILE)
        )
        return None
    ctx.would("store the admin password in %s as %s" % (store, name))
    return None


def instance_names_and_addresses(ctx):
    """What the API may be reached as: loopback, the host name, and IMDS's names and addresses."""
    names, addresses = ["localhost", socket.gethostname()], ["127.0.0.1", "::1"]
    if ctx.settings["api_host"] not in ("0.0.0.0", "::"):
        addresses.append(ctx.settings["api_host"])
    if ctx.state.imds is not None:
        for kind, path in CERTIFICATE_METADATA:
            try:
                value = (ctx.state.imds.get("meta-data/" + path) or "").strip()
            except NoMetadata:
                value = ""
            (names if kind == "DNS" else addresses).append(value)
    return names, addresses


def make_api_certificate(ctx):
    """api_tls self-signed: a certificate for this instance (kept at a reboot, new with a new identity)."""
    if ctx.settings["api_tls"] != "self-signed":
        return "skipped"
    have = os.path.exists(L.API_TLS_CERT) and os.path.exists(L.API_TLS_KEY)
    if have and ctx.state.mode != "rotate":
        ctx.info("keeping the API certificate %s" % L.API_TLS_CERT)
        return "skipped"
    names, addresses = instance_names_and_addresses(ctx)
    alt_names = subject_alt_names(names, addresses)
    ctx.info("API certificate for %s" % ", ".join(alt_names))
    work = tempfile.mkdtemp(prefix="airflow-ami-tls-")
    try:
        config = os.path.join(work, "request.cnf")
        with open(config, "w") as fh:
            fh.write(request_config(socket.gethostname(), alt_names))
        key, cert = os.path.join(work, "api.key"), os.path.join(work, "api.crt")
        ctx.run(openssl_argv(config, key, cert))
        with open(key, "rb") as fh:
            key_pem = fh.read()
        with open(cert, "rb") as fh:
            cert_pem = fh.read()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    # Others may pass through, not list: tasks (the task user) verify the API by the
    # certificate; the key's own mode keeps it the services'.
    ctx.ensure_dir(os.path.dirname(L.API_TLS_KEY), 0o751, "root", L.AIRFLOW_USER)
    # The key first: a certificate on disk always has its key beside it.
    ctx.write_file(L.API_TLS_KEY, key_pem, 0o640, "root", L.AIRFLOW_USER, secret=True)
    ctx.write_file(L.API_TLS_CERT, cert_pem, 0o644, "root", "root")
    return None


def write_firstboot_record(ctx):
    """Record instance id, region, IMDS version, time, MySQL server UUID."""
    worker = ctx.state.role.role == "worker"
    uuid = None if worker else mysql_sql(ctx, "SELECT @@server_uuid;", quiet=True).strip()
    record = {
        "role": ctx.state.role.role,
        "cluster": ctx.state.role.cluster,
        "instance_id": ctx.state.instance_id,
        "region": ctx.state.region,
        "imds_version": ctx.state.imds_version,
        "mode": ctx.state.mode,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "mysql_server_uuid": uuid,
        "parallelism": ctx.state.parallelism,
        "machine_id": machine_id(),
        "steps": ctx.timings,
    }
    ctx.write_file(
        L.FIRSTBOOT_MARKER, json.dumps(record, indent=2, sort_keys=True) + "\n", 0o644, "root", "root"
    )


# Written for a first boot killed at any step: each step can run again, secrets are
# kept from the first write on, and the record (what says "done") is written last.
STEPS = [
    read_instance_identity,
    read_role,
    follow_the_controller,
    write_role,
    read_existing_secrets,
    decide_what_to_do,
    size_to_the_instance,
    write_deployment_record,
    fetch_deployment_secrets,
    generate_secrets,
    publish_deployment_secrets,
    stop_mysql_on_a_worker,
    on_the_database_node(rekey_mysql_user),
    on_the_database_node(size_mysql_buffer_pool),
    write_secrets_env,
    write_redis_config,
    on_the_database_node(write_admin_password_file),
    make_api_certificate,
    on_the_database_node(restore_requested_dump),
    on_the_database_node(check_the_schema),
    on_the_database_node(reencrypt_with_the_new_fernet_key),
    on_the_database_node(store_admin_password),
    on_the_database_node(leave_the_admin_to_its_unit),
    write_firstboot_record,
]


def admin_main(ctx):
    """`provision.py firstboot-admin` (FIRSTBOOT_ADMIN_UNIT): what first boot left pending."""
    if not os.path.exists(L.ADMIN_PENDING):
        log("first boot left no admin user to set")
        return 0
    return run_steps(ctx, [set_the_admin_and_aws_default], "firstboot-admin")


def main(ctx):
    if ctx.dry_run:
        # first boot generates and writes secrets at every step: describe it only
        for step in STEPS:
            ctx.info(
                "[dry-run] would run first-boot step %s: %s"
                % (step.__name__, (step.__doc__ or "").strip().splitlines()[0] if step.__doc__ else "")
            )
        return 0
    ctx.state = FirstbootState()
    return run_steps(ctx, STEPS, "firstboot")
