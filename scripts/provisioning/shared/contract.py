"""What the host tells the instance, declared once for both sides (stdlib only, Python >= 3.7).

The host (airflow_ami/seam.py) and the instance load this same file, so neither
restates what the other writes:

- ``SETTINGS``: every key of settings.json (the bundle's, then
  layout.BAKED_SETTINGS on the image). The host writes exactly these; the
  instance reads them through :func:`read_settings`, which refuses a file that
  lacks one, and never supplies a default of its own.
- ``OS_FACTS``: the facts of an OS profile (settings.json ``os_facts``).
- The user-data document of a launch (README "Scaling out"): :func:`user_data`
  writes it for both clouds' launches, :func:`parse_user_data` reads it at
  first boot; the limits both apply are declared here.

No user data means ``standalone``. User data not starting with { or [ (a
cloud-init script or config) is not for us: also ``standalone``. A JSON
document with anything wrong in it is refused with one line naming the key and
the allowed form, so a mistyped worker never half-joins a cluster.
"""

import collections
import ipaddress
import json
import re

from .layout import CLUSTER_NAME_FORM, CLUSTER_NAME_PATTERN, ROLES

# ---- settings.json ----

# Every key of settings.json; the host's declarations (airflow_ami/settings) give each
# its value. os_facts is a mapping of OS_FACTS.
SETTINGS = (
    # what the image is
    "os",
    "arch",
    "region",
    "airflow_version",
    "python_version",
    "mysql_version",
    "extra_python_packages",
    "unit_directives",
    "unit_directives_systemd",
    "os_facts",
    # how the build fetches it (build_source keys: layout.BUILD_SOURCE_SETTINGS)
    "constraints_url",
    "constraints_file",
    "index_url",
    "os_mirror",
    "extra_ca_bundle",
    "keep_build_sources",
    "uv_version",
    "uv_wheel_sha256",
    "mysql_signing_key_fingerprint",
    "dry_run",
    # how it runs
    "max_allowed_packet",
    "parallelism",
    "api_host",
    "api_port",
    "api_tls",
    "api_url",
    "admin_username",
    "admin_password_store",
    "admin_password_name",
    "secret_store",
    "aws_endpoint_url",
    "log_retention_days",
    "db_retention_days",
    "backup_retention_days",
    "backup_s3_uri",
    "backup_interval_minutes",
    "task_logs_s3_uri",
    "cloudwatch_metrics",
)
# The facts of an OS profile (its settings layer's os_facts), not choices.
OS_FACTS = (
    "package_manager",
    "mysql_unit",
    "mysql_socket",
    "mysql_datadir",
    "mysql_dropin",
    "ca_anchor",
    "ca_bundle",
    # Decides which unit directives the image's units may use.
    "systemd_version",
    # Redis, the Celery broker of a cluster's controller.
    "redis_package",
    "redis_unit",
    "redis_server",
    "redis_user",
)
# The most task slots a pinned `parallelism` may ask for.
MAX_PARALLELISM = 1024


class SettingsMissing(KeyError):
    """settings.json lacks a key: written by another version than this code's."""

    def __str__(self):
        return (
            "settings.json lacks %s: it was rendered by another version of airflow-ami;"
            " render the bundle again with this one" % self.args[0]
        )


class Settings(dict):
    """settings.json as read on the instance: a key it lacks is an error naming it."""

    def __missing__(self, key):
        raise SettingsMissing(key)


def read_settings(path):
    """settings.json at ``path``, refused unless it has every key of SETTINGS and OS_FACTS."""
    with open(path) as fh:
        return checked_settings(json.load(fh))


def checked_settings(data):
    """A settings.json document, refused unless it has every key of SETTINGS and OS_FACTS."""
    missing = [key for key in SETTINGS if key not in data]
    missing += ["os_facts.%s" % name for name in OS_FACTS if name not in (data.get("os_facts") or {})]
    if missing:
        raise SettingsMissing(", ".join(missing))
    return Settings(data)


class OsFacts(collections.namedtuple("OsFacts", OS_FACTS)):
    """settings.json ``os_facts``: written by the host from the OS profile."""

    __slots__ = ()

    @classmethod
    def from_settings(cls, settings):
        return cls(**{name: settings["os_facts"][name] for name in cls._fields})


# ---- a deployment: what outlives its instances ----

# Where a named deployment keeps its secrets: SSM Parameter Store or Secrets Manager.
SECRET_STORES = ("ssm", "secretsmanager")


def deployment_secret_name(store, deployment):
    """The deployment's secrets document: SSM SecureString name, or a Secrets Manager
    secret's (which takes no leading /)."""
    name = "airflow-ami/%s/secrets" % deployment
    return "/" + name if store == "ssm" else name


def deployment_worker_secret_name(store, deployment):
    """What a cluster's workers hold of its secrets (the API secret key and the broker's
    password), in a document of its own that the controller writes: the workers' role may
    read it and the controller's address, and nothing else of the store."""
    name = "airflow-ami/%s/worker-secrets" % deployment
    return "/" + name if store == "ssm" else name


def deployment_controller_name(store, deployment):
    """Where a cluster's controller says its private address (workers follow it)."""
    name = "airflow-ami/%s/controller" % deployment
    return "/" + name if store == "ssm" else name


def backup_location(uri, owner):
    """(bucket, key prefix) of the dumps of ``owner`` (a deployment, else an instance id)
    under backup_s3_uri ``uri``: s3://BUCKET/PREFIX/<owner>/."""
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    return bucket, "/".join(p for p in (prefix.strip("/"), owner) if p) + "/"


# ---- the user-data document ----

CLUSTER_RE = re.compile(CLUSTER_NAME_PATTERN)
QUEUE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)%s(\.%s)*$" % (LABEL, LABEL))
MAX_WORKER_CONCURRENCY = 256
DEFAULT_QUEUES = ("default",)
# S3's "safe" key characters but the quote: these URIs are rendered into KEY='value' env files.
S3_URI_PATTERN = r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[A-Za-z0-9!_.*()/-]*)?$"
S3_URI_RE = re.compile(S3_URI_PATTERN)
AWS_NAME_RE = re.compile(r"^[A-Za-z0-9_./-]{1,255}$")

# How often a database node dumps its database (user data backup_interval_minutes, else the
# bake's setting): every hour by default, so a lost instance loses at most an hour and the
# backup timer's tick (layout.BACKUP_TICK_MINUTES).
MIN_BACKUP_INTERVAL_MINUTES, MAX_BACKUP_INTERVAL_MINUTES = 5, 1440
# restore: the newest dump of the deployment, or one dump named by its URI.
RESTORE_LATEST = "latest"
DUMP_URI_RE = re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/[A-Za-z0-9!_.*()/-]+\.sql\.gz$")

# ---- a cluster's workers, their Auto Scaling group and what it scales on ----

# Airflow's metrics and the instance's own, in CloudWatch (running/metrics.py): one namespace;
# each datum names its InstanceId and Role, and the broker's queue depth also its Cluster
# (the series a cluster's scaling policy tracks, whichever instance is the controller now).
METRICS_NAMESPACE = "Airflow"
QUEUE_DEPTH_METRIC = "BrokerQueueDepth"
CLUSTER_DIMENSION = "Cluster"
# The termination lifecycle hook of a cluster's worker group: a leaving worker stops taking
# tasks, lets its running ones finish (the worker unit's warm shutdown, at most
# layout.WORKER_SERVICE stop_timeout), uploads their logs and completes the action; the hook
# waits that long and LEAVE_MARGIN_SECONDS more, then terminates it anyway.
LIFECYCLE_HOOK = "airflow-ami-drain"
LEAVE_MARGIN_SECONDS = 120

Role = collections.namedtuple(
    "Role",
    "role cluster controller dags_s3_uri worker_concurrency worker_queues"
    " deployment backup_s3_uri backup_interval_minutes restore"
    " task_logs_s3_uri autoscaling_group lifecycle_hook",
)

STANDALONE = Role(
    "standalone", None, None, None, None, DEFAULT_QUEUES, None, None, None, None, None, None, None
)
# Keys only the node holding the database takes (a standalone instance or a controller).
DATABASE_NODE_KEYS = ("backup_s3_uri", "backup_interval_minutes", "restore")


class BadUserData(ValueError):
    """One line: what is wrong with the user data and what is allowed."""


def _fail(key, allowed, found):
    raise BadUserData("user data %s: %s (found %r); see README 'Scaling out'" % (key, allowed, found))


def _controller_address(value):
    if isinstance(value, str):
        try:
            ipaddress.ip_address(value)
            return value
        except ValueError:
            if HOSTNAME_RE.match(value):
                return value
    return _fail("controller", "the controller's private IP address or DNS name", value)


def _whole(value, low, high):
    return not isinstance(value, bool) and isinstance(value, int) and low <= value <= high


def user_data(
    role,
    *,
    cluster="",
    dags_s3_uri="",
    controller=None,
    worker_concurrency=None,
    deployment="",
    backup_s3_uri="",
    backup_interval_minutes=None,
    restore="",
    task_logs_s3_uri="",
    autoscaling_group="",
    lifecycle_hook="",
):
    """The document that launches an instance of ``role`` ("" when it asks nothing of it).

    Both clouds' launches write it with this function; parse_user_data reads it. A
    cluster's deployment is the cluster: its name is not repeated.
    """
    doc = {"role": role}
    if role != "standalone":
        doc.update(cluster=cluster, dags_s3_uri=dags_s3_uri)
    elif deployment:
        doc["deployment"] = deployment
    optional = {
        "controller": controller,
        "worker_concurrency": worker_concurrency,
        "backup_s3_uri": backup_s3_uri,
        "backup_interval_minutes": backup_interval_minutes,
        "restore": restore,
        "task_logs_s3_uri": task_logs_s3_uri,
        "autoscaling_group": autoscaling_group,
        "lifecycle_hook": lifecycle_hook,
    }
    doc.update({key: value for key, value in optional.items() if value})
    return "" if doc == {"role": "standalone"} else json.dumps(doc, sort_keys=True)


def parse_user_data(text):
    """The Role that ``text`` (the raw user data, or None) asks for."""
    body = (text or "").strip()
    if not body.startswith(("{", "[")):
        return STANDALONE
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise BadUserData("user data is not valid JSON (%s); see README 'Scaling out'" % exc) from None
    if not isinstance(doc, dict):
        _fail("", "a JSON object", type(doc).__name__)
    known = set(Role._fields)
    for key in sorted(doc):
        if key not in known:
            _fail(repr(key), "not a key of the document; known: %s" % ", ".join(Role._fields), doc[key])
    role = doc.get("role", "standalone")
    if role not in ROLES:
        _fail("role", "one of %s" % ", ".join(ROLES), role)
    backups = _database_node_keys(doc, role)
    logs = doc.get("task_logs_s3_uri")
    if logs is not None and (not isinstance(logs, str) or not S3_URI_RE.match(logs)):
        _fail("task_logs_s3_uri", "s3://BUCKET[/PREFIX], where task logs go", logs)
    if role == "standalone":
        extra = sorted(
            k for k in doc if k not in ("role", "deployment", "task_logs_s3_uri", *DATABASE_NODE_KEYS)
        )
        if extra:
            _fail(extra[0], "only for a controller or a worker", doc[extra[0]])
        deployment = doc.get("deployment")
        if deployment is not None and (not isinstance(deployment, str) or not CLUSTER_RE.match(deployment)):
            _fail("deployment", CLUSTER_NAME_FORM, deployment)
        if backups[2] == RESTORE_LATEST and deployment is None:
            _fail("restore", "latest only with a deployment (whose backups it names)", backups[2])
        return STANDALONE._replace(
            deployment=deployment, task_logs_s3_uri=logs, **dict(zip(DATABASE_NODE_KEYS, backups))
        )
    cluster = doc.get("cluster")
    if not isinstance(cluster, str) or not CLUSTER_RE.match(cluster):
        _fail("cluster", CLUSTER_NAME_FORM, cluster)
    if "deployment" in doc and doc["deployment"] != cluster:
        _fail("deployment", "the cluster's name (a cluster is its deployment)", doc["deployment"])
    controller = None
    if role == "worker":
        controller = _controller_address(doc.get("controller"))
    elif "controller" in doc:
        _fail("controller", "only for a worker (a controller is its own)", doc["controller"])
    dags = doc.get("dags_s3_uri")
    if not isinstance(dags, str) or not S3_URI_RE.match(dags):
        _fail("dags_s3_uri", "s3://BUCKET[/PREFIX], the DAG bundle every node of the cluster reads", dags)
    concurrency = doc.get("worker_concurrency")
    if concurrency is not None and not _whole(concurrency, 1, MAX_WORKER_CONCURRENCY):
        _fail("worker_concurrency", "an integer 1-%d" % MAX_WORKER_CONCURRENCY, concurrency)
    queues = doc.get("worker_queues", list(DEFAULT_QUEUES))
    if (
        not isinstance(queues, list)
        or not queues
        or not all(isinstance(q, str) and QUEUE_RE.match(q) for q in queues)
    ):
        _fail("worker_queues", "a non-empty list of queue names (letters, digits, _ . -)", queues)
    if role == "controller" and ("worker_concurrency" in doc or "worker_queues" in doc):
        _fail("worker_concurrency/worker_queues", "only for a worker", doc.get("worker_concurrency"))
    group, hook = _scaling_keys(doc, role)
    return Role(
        role, cluster, controller, dags, concurrency, tuple(queues), cluster, *backups, logs, group, hook
    )


def _scaling_keys(doc, role):
    """(autoscaling_group, lifecycle_hook): a worker of a group learns it is leaving and
    completes the group's termination hook; both or neither."""
    given = [key for key in ("autoscaling_group", "lifecycle_hook") if key in doc]
    if given and role != "worker":
        _fail(given[0], "only for a worker (an Auto Scaling group's member)", doc[given[0]])
    if len(given) == 1:
        _fail(
            given[0],
            "together with %s" % ({"autoscaling_group", "lifecycle_hook"} - set(given)).pop(),
            doc[given[0]],
        )
    values = [doc.get(key) for key in ("autoscaling_group", "lifecycle_hook")]
    for key, value in zip(("autoscaling_group", "lifecycle_hook"), values):
        if value is not None and (not isinstance(value, str) or not AWS_NAME_RE.match(value)):
            _fail(key, "1-255 letters, digits and _ . / -", value)
    return values[0], values[1]


def _database_node_keys(doc, role):
    """(backup_s3_uri, backup_interval_minutes, restore) as given, each checked."""
    given = [key for key in DATABASE_NODE_KEYS if key in doc]
    if given and role == "worker":
        _fail(
            given[0], "only for the instance holding the database (standalone or controller)", doc[given[0]]
        )
    uri = doc.get("backup_s3_uri")
    if uri is not None and (not isinstance(uri, str) or not S3_URI_RE.match(uri)):
        _fail("backup_s3_uri", "s3://BUCKET[/PREFIX], where the dumps go", uri)
    interval = doc.get("backup_interval_minutes")
    if interval is not None and not _whole(
        interval, MIN_BACKUP_INTERVAL_MINUTES, MAX_BACKUP_INTERVAL_MINUTES
    ):
        _fail(
            "backup_interval_minutes",
            "an integer %d-%d" % (MIN_BACKUP_INTERVAL_MINUTES, MAX_BACKUP_INTERVAL_MINUTES),
            interval,
        )
    restore = doc.get("restore")
    if (
        restore is not None
        and restore != RESTORE_LATEST
        and not (isinstance(restore, str) and DUMP_URI_RE.match(restore))
    ):
        _fail("restore", "latest, or the s3:// URI of a dump (.sql.gz)", restore)
    return uri, interval, restore


def task_logs_location(role, settings):
    """Where task logs go: the launch's user data (`role`, parsed), else the image's setting
    ("" keeps them on the instance only)."""
    return role.task_logs_s3_uri or settings["task_logs_s3_uri"]
