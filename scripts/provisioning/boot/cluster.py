"""A cluster's roles at first boot: what each role runs with (pure).

A cluster is a named deployment: the secrets every node shares live in its store
(deployment.py), made by the controller, read by the workers with their instance
role. Nothing shared travels in user data.
"""

import hashlib
import json

from ..shared import layout as L
from ..shared.secretgen import env_file_line

# What every node of a cluster must hold alike.
SHARED_SECRETS = ("fernet_key", "jwt_secret", "api_secret_key", "broker_password")
# Secrets each role keeps on disk (the database and the admin live on the controller). A
# worker runs Celery (the broker's password) and its log server, which checks the
# controller's api-server by the API secret key; its tasks reach the execution API with
# their own tokens, signed by the scheduler, and get Connections decrypted from it: no
# fernet key, no JWT secret (the cluster suite passes without them).
ROLE_SECRETS = {
    "standalone": ("db_password", "fernet_key", "jwt_secret", "api_secret_key", "admin_password"),
    "controller": (
        "db_password",
        "fernet_key",
        "jwt_secret",
        "api_secret_key",
        "admin_password",
        "broker_password",
    ),
    "worker": ("api_secret_key", "broker_password"),
}
BROKER_DB, RESULTS_DB = 0, 1
S3_BUNDLE = "airflow.providers.amazon.aws.bundles.s3.S3DagBundle"
# TIs record the node's address, so the controller's api-server can fetch a worker's logs.
HOSTNAME_CALLABLE = "airflow.utils.net.get_host_ip_address"


def redis_url(password, host, db):
    return "redis://%s:%s@%s:%d/%d" % (L.BROKER_USER, password, host, L.REDIS_PORT, db)


def celery_secret_lines(role, password):
    """secrets.env lines of a controller or worker: the broker and result backend (Redis)."""
    if role.role == "standalone":
        return []
    host = "127.0.0.1" if role.role == "controller" else role.controller
    return [
        env_file_line("AIRFLOW__CELERY__BROKER_URL", redis_url(password, host, BROKER_DB)),
        env_file_line("AIRFLOW__CELERY__RESULT_BACKEND", redis_url(password, host, RESULTS_DB)),
    ]


def dag_bundles(dags_s3_uri):
    bucket, _, prefix = dags_s3_uri[len("s3://") :].partition("/")
    return [
        {
            "name": "cluster-dags",
            "classpath": S3_BUNDLE,
            "kwargs": {"bucket_name": bucket, "prefix": prefix.strip("/"), "aws_conn_id": "aws_default"},
        }
    ]


def remote_logging(task_logs_s3_uri):
    """Airflow's S3 task handler: each task's log is put under the URI when the task ends,
    with aws_default (the instance role, SSE-S3), and the UI and API read it from there,
    whichever instance ran it and whether or not that instance still exists."""
    if not task_logs_s3_uri:
        return []
    return [
        ("AIRFLOW__LOGGING__REMOTE_LOGGING", "True"),
        ("AIRFLOW__LOGGING__REMOTE_BASE_LOG_FOLDER", task_logs_s3_uri.rstrip("/")),
        ("AIRFLOW__LOGGING__REMOTE_LOG_CONN_ID", "aws_default"),
        ("AIRFLOW__LOGGING__ENCRYPT_S3_LOGS", "True"),
    ]


def role_env(role, api_port, task_logs_s3_uri):
    """ROLE_ENV: the Airflow settings of the role and where its task logs go (no secret in it)."""
    lines = ["# Written by airflow-firstboot.service: this instance is a %s.\n" % role.role]
    values = remote_logging(task_logs_s3_uri)
    if role.role == "standalone":
        return "".join(lines + [env_file_line(name, value) for name, value in values])
    values += [
        ("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor"),
        ("AIRFLOW__CORE__HOSTNAME_CALLABLE", HOSTNAME_CALLABLE),
        ("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", json.dumps(dag_bundles(role.dags_s3_uri))),
    ]
    if role.role == "worker":
        values += [
            (
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
                "http://%s:%d/execution/" % (role.controller, api_port),
            ),
            ("AIRFLOW_AMI_WORKER_QUEUES", ",".join(role.worker_queues)),
        ]
        if role.worker_concurrency:
            values.append(("AIRFLOW__CELERY__WORKER_CONCURRENCY", str(role.worker_concurrency)))
    return "".join(lines + [env_file_line(name, value) for name, value in values])


# What Celery runs on its broker: every key and channel, every command but those that
# reconfigure or replicate the server (@dangerous: CONFIG, MODULE, REPLICAOF, DEBUG, ...).
CELERY_PERMISSIONS = "~* &* +@all -@dangerous"


def redis_conf(password, private_ip, redis_user, maxmemory_mib):
    """The broker's config: the private address and loopback only; one account, Celery's
    (the password by its SHA-256 only) with CELERY_PERMISSIONS, and the default user off;
    its queue on the controller's disk: an append-only file fsynced every second (a restart,
    an upgrade of the package or an OOM kill loses at most a second of messages), rewritten
    when it doubles, so it stays near the size of what is queued, bounded by maxmemory."""
    return "".join(
        "%s\n" % line
        for line in (
            "# Written by airflow-firstboot.service (a cluster's controller); root and redis only.",
            "bind 127.0.0.1 %s" % private_ip,
            "port %d" % L.REDIS_PORT,
            "protected-mode yes",
            # Off and without a password, so no client can be it; yet it keeps Celery's
            # commands: Redis replays the append-only file's MULTI/EXEC blocks as the default
            # user and drops (with a log line) each one that user may not run - kombu's queue
            # bindings among them, so a restart would lose the queue's routing.
            "user default off resetpass %s" % CELERY_PERMISSIONS,
            "user %s on #%s %s"
            % (L.BROKER_USER, hashlib.sha256(password.encode("utf-8")).hexdigest(), CELERY_PERMISSIONS),
            "supervised systemd",
            "daemonize no",
            'logfile ""',
            # The package's data directory, mode 750, which only redis writes.
            "dir /var/lib/%s" % redis_user,
            'save ""',
            "appendonly yes",
            "appendfsync everysec",
            "auto-aof-rewrite-percentage 100",
            "auto-aof-rewrite-min-size 64mb",
            "maxmemory %dmb" % maxmemory_mib,
            # A message the broker has taken is never evicted: when full, a new one is refused.
            "maxmemory-policy noeviction",
        )
    )
