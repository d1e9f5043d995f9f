"""The image's own facts: paths, the Airflow units, the files rendered into them (data only).

One declaration, read by provisioning and cleanup on the instance, by the host's
renderer (unit files, the target, first-boot ordering) and by the testinfra
suite (which uploads this file next to its probe). Standard library only and
no imports of other provisioning modules, so each of them can load it alone.
"""

AIRFLOW_HOME = "/opt/airflow"
VENV = AIRFLOW_HOME + "/venv"
AIRFLOW_BIN = VENV + "/bin/airflow"
AIRFLOW_CFG = AIRFLOW_HOME + "/airflow.cfg"
AIRFLOW_LOGS = AIRFLOW_HOME + "/logs"
AIRFLOW_USER = "airflow"
# Every workload an executor or a Celery worker runs (tasks, callbacks: DAG authors' code) runs
# as this user, forked from WORKLOAD's service (socket-activated: a service connects to
# WORKLOAD_SOCKET, root:airflow 0660; the service, started with a clean environment and
# Airflow imported once, forks one process per workload): it cannot read the services'
# secrets, their /proc, the secret files or the database's socket accounts (README "What a
# DAG author can reach").
TASK_USER = "airflow-task"
TASK_HOME = "/var/lib/airflow-task"
WORKLOAD = {
    "socket": "airflow-workload.socket",
    "unit": "airflow-workload.service",
    "slice": "airflow-workloads.slice",
    "roles": ("standalone", "worker"),
    # All workloads together, as the scheduler's tasks were bounded with it.
    "memory_high": "70%",
    "memory_max": "80%",
}
WORKLOAD_SOCKET = "/run/airflow-workload.sock"
ETC_AIRFLOW = "/etc/airflow"
AIRFLOW_ENV = ETC_AIRFLOW + "/airflow.env"
SECRETS_ENV = ETC_AIRFLOW + "/secrets.env"
ADMIN_PASSWORD_FILE = ETC_AIRFLOW + "/admin-password"
# api_tls self-signed: the API's certificate, made at first boot (key 0640 root:airflow).
API_TLS_CERT = ETC_AIRFLOW + "/tls/api.crt"
API_TLS_KEY = ETC_AIRFLOW + "/tls/api.key"
AIRFLOW_CLI = "/usr/local/bin/airflow"
BAKED_SETTINGS = "/etc/airflow-ami/settings.json"
CODE_DIR = "/usr/local/lib/airflow-ami"
STATE_DIR = "/var/lib/airflow-ami"
FIRSTBOOT_MARKER = STATE_DIR + "/firstboot.json"
# The instance's role in a cluster (user data, contract.py): first boot writes ROLE_DIR/<role>
# and ROLE_ENV (the role's Airflow settings, no secrets); each unit runs only in its roles.
ROLES = ("standalone", "controller", "worker")
# A cluster's name (user data, and the host's --cluster): also part of its secrets' and bucket's names.
MAX_CLUSTER_NAME = 40
CLUSTER_NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,%d}$" % (MAX_CLUSTER_NAME - 1)
CLUSTER_NAME_FORM = (
    "1-%d lower-case letters, digits and -, starting with a letter or digit" % MAX_CLUSTER_NAME
)
ROLE_DIR = STATE_DIR + "/role"
ROLE_ENV = ETC_AIRFLOW + "/role.env"
# First boot's exit status when the user data is wrong (its unit does not retry then).
BAD_USER_DATA_EXIT = 3
# controller: Redis, the Celery broker, with first boot's config (password, private address).
REDIS_CONF = ETC_AIRFLOW + "/redis/redis.conf"
REDIS_PORT = 6379
# The broker's one account (Redis ACL), with Celery's commands only: the default user is off.
BROKER_USER = "airflow-celery"
# Where a worker serves its task logs to the controller's api-server.
WORKER_LOG_PORT = 8793
BUILD_DIR = STATE_DIR + "/build"  # uv, its cache, constraints: removed by cleanup
BUILD_PACKAGES_RECORD = STATE_DIR + "/build-packages.json"
VENV_SPEC_STAMP = VENV + "/.airflow-ami-spec.json"
BACKUP_DIR = "/var/backups/airflow"  # airflow-db-backup.service's dumps (0700 airflow)
# MySQL's programs no role runs. The image keeps the client, mysqldump and mysqladmin (first
# boot, backups, restores), mysqld and what its unit runs (my_print_defaults, mysqld_safe).
MYSQL_UNUSED_PROGRAMS = (
    "ibd2sdi",
    "innochecksum",
    "lz4_decompress",
    "myisam_ftdump",
    "myisamchk",
    "myisamlog",
    "myisampack",
    "mysql_config_editor",
    "mysql_migrate_keyring",
    "mysql_secure_installation",
    "mysql_ssl_rsa_setup",
    "mysql_tzinfo_to_sql",
    "mysqlbinlog",
    "mysqlcheck",
    "mysqlimport",
    "mysqlpump",
    "mysqlshow",
    "mysqlslap",
    "perror",
    "zlib_decompress",
)
# What no role uses, left out of the image: removed by cleanup and kept out of later package
# installs and updates (dpkg's path-exclude, rpm's netsharedpath); validate-image checks it.
LEFT_OUT_DIRS = ("/usr/share/doc", "/usr/share/man", "/usr/share/info", "/usr/share/locale")
LEFT_OUT_PATHS = (*LEFT_OUT_DIRS, *("/usr/bin/" + name for name in MYSQL_UNUSED_PROGRAMS))
# Where each package manager is told to leave them out.
DPKG_LEFT_OUT_CONFIG = "/etc/dpkg/dpkg.cfg.d/airflow-ami-left-out"
RPM_LEFT_OUT_CONFIG = "/etc/rpm/macros.airflow-ami-left-out"
# Kept under them: each package's copyright (Debian's policy), and glibc's locale aliases.
LEFT_OUT_KEPT = ("/usr/share/doc/*/copyright", "/usr/share/locale/locale.alias")
# What first boot decided about this instance's deployment and backups (user data, else the
# bake's settings): deployment, backup_s3_uri, backup_interval_minutes.
DEPLOYMENT_RECORD = STATE_DIR + "/deployment.json"
# The dump first boot restored (user data restore), so a boot killed later does not load it again.
RESTORED_RECORD = STATE_DIR + "/restored.json"
# The backup timer ticks this often; a tick dumps once backup_interval_minutes have passed.
BACKUP_TICK_MINUTES = 5
# A restore loads into the first and swaps it in; the second holds the tables it replaced.
MYSQL_RESTORE_DATABASE = "airflow_restoring"
MYSQL_REPLACED_DATABASE = "airflow_replaced"
# The tables a dump's manifest counts the rows of (an upgrade checks them one by one).
COUNTED_TABLES = ("dag", "dag_run", "task_instance", "xcom", "connection", "variable", "ab_user")
BACKUP_CLI = "/usr/local/sbin/airflow-ami-backup"
BACKUP_UNIT = "airflow-db-backup.service"
# Settings naming what only the build needs: gone from the image (settings.json,
# trust store, package sources) unless keep_build_sources.
BUILD_SOURCE_SETTINGS = ("os_mirror", "index_url", "extra_ca_bundle")
# Where the mirror's rewrite keeps the original package sources, to put them back.
SOURCES_BACKUP_DIR = BUILD_DIR + "/sources-before-mirror"
MYSQL_DATABASE = "airflow"
MYSQL_USER = "airflow"
BACKUP_MYSQL_USER = "airflow_backup"
SYSTEMD_DIR = "/etc/systemd/system"
# Ports the image itself uses (the API's is a setting, api_port, which must avoid these).
MYSQL_PORT = 3306
IMAGE_PORTS = {
    "MySQL": MYSQL_PORT,
    "MySQL X protocol": 33060,
    "task log server": WORKER_LOG_PORT,
    "Redis": REDIS_PORT,
    "trigger log server": 8794,
}
HEALTH_PATH = "/api/v2/monitor/health"
# What /api/v2/monitor/health must report healthy for the instance to be healthy.
HEALTH_COMPONENTS = ("metadatabase", "scheduler", "dag_processor")

# The long-running Airflow services: one unit each, all from the one template
# provisioning/bake/templates/airflow-service.service.j2; `command` follows `airflow`, `why`
# (optional) explains an unusual flag in the unit file; `memory_high`/`memory_max`
# bound the service's cgroup (share of the instance's memory; the scheduler's
# holds the LocalExecutor's tasks); `roles` are the roles it runs in (HOUSEKEEPING too).
AIRFLOW_SERVICES = (
    {
        "unit": "airflow-scheduler.service",
        "description": "Airflow scheduler",
        "command": "scheduler --skip-serve-logs",
        "memory_high": "70%",
        "memory_max": "80%",
        "roles": ("standalone", "controller"),
        "why": "Task logs stay on this host, where the api-server reads them: no log server on 0.0.0.0:8793.",
    },
    {
        "unit": "airflow-dag-processor.service",
        "description": "Airflow dag-processor",
        "command": "dag-processor",
        "roles": ("standalone", "controller"),
        "memory_high": "20%",
        "memory_max": "25%",
    },
    {
        "unit": "airflow-api-server.service",
        "description": "Airflow api-server",
        "command": "api-server",
        "roles": ("standalone", "controller"),
        "memory_high": "30%",
        "memory_max": "40%",
    },
    {
        "unit": "airflow-triggerer.service",
        "description": "Airflow triggerer",
        "command": "triggerer --skip-serve-logs",
        "roles": ("standalone", "controller"),
        "memory_high": "20%",
        "memory_max": "25%",
        "why": "Trigger logs stay on this host for the api-server to read: no log server on 0.0.0.0:8794.",
    },
    {
        "unit": "airflow-celery-worker.service",
        "description": "Airflow Celery worker",
        "command": "celery worker --queues ${AIRFLOW_AMI_WORKER_QUEUES}",
        "roles": ("worker",),
        "memory_high": "80%",
        "memory_max": "90%",
        # Stopping a worker is Celery's warm shutdown: its running tasks finish first.
        "stop_timeout": 1800,
        "why": "Its log server (port 8793) serves task logs to the controller's api-server,"
        " open to the cluster's security group only; the queues come from user data (ROLE_ENV).",
    },
)
SERVICE_UNITS = tuple(s["unit"] for s in AIRFLOW_SERVICES)
(WORKER_SERVICE,) = (s for s in AIRFLOW_SERVICES if s["roles"] == ("worker",))
FIRSTBOOT_UNIT = "airflow-firstboot.service"
# First boot's one slow step, the admin user and aws_default's region (an Airflow process,
# about 4 s), runs beside the services' start: first boot leaves ADMIN_PENDING (the region;
# the password is ADMIN_PASSWORD_FILE) to this unit, which the dag-processor requires, so the
# health endpoint reports every component healthy only once the admin can log in.
FIRSTBOOT_ADMIN_UNIT = "airflow-firstboot-admin.service"
ADMIN_PENDING = STATE_DIR + "/admin-pending.json"
# The schema's alembic revision as the bake migrated it: first boot compares, not imports.
SCHEMA_REVISION_RECORD = STATE_DIR + "/schema-revision"
# All that first boot writes (its sandbox makes the rest of the system read-only); BACKUP_DIR:
# a restore at first boot downloads its dump there and dumps the live database first.
FIRSTBOOT_WRITES = (ETC_AIRFLOW, STATE_DIR, AIRFLOW_HOME, BACKUP_DIR)
AIRFLOW_TARGET = "airflow.target"
# Housekeeping that keeps the disk bounded and the data safe, each a oneshot service run by a
# timer (from provisioning/bake/templates/airflow-housekeeping.timer.j2, one per entry): daily,
# or at `on_calendar`.
HOUSEKEEPING = (
    {
        "unit": "airflow-log-prune.service",
        "timer": "airflow-log-prune.timer",
        "description": "prune Airflow task and dag-processor logs older than log_retention_days",
        "roles": ROLES,
        "memory_high": "10%",
        "memory_max": "20%",
    },
    {
        "unit": BACKUP_UNIT,
        "timer": "airflow-db-backup.timer",
        "description": "dump the metadata database when backup_interval_minutes have passed"
        " (and copy it to backup_s3_uri)",
        "on_calendar": "*:0/%d" % BACKUP_TICK_MINUTES,
        "roles": ("standalone", "controller"),
        "memory_high": "20%",
        "memory_max": "30%",
        "writes": BACKUP_DIR,
    },
    {
        "unit": "airflow-db-clean.service",
        "timer": "airflow-db-clean.timer",
        "description": "airflow db clean: metadata older than db_retention_days",
        "roles": ("standalone", "controller"),
        "memory_high": "25%",
        "memory_max": "30%",
    },
)
# A named deployment's nodes compare their secrets (and a worker its controller's address)
# with the store this often, as root, and take the store's (running/secrets.py).
SECRETS_REFRESH_UNIT = "airflow-secrets-refresh.service"
SECRETS_REFRESH_TIMER = "airflow-secrets-refresh.timer"
SECRETS_REFRESH_MINUTES = 2
TIMERS = (*(job["timer"] for job in HOUSEKEEPING), SECRETS_REFRESH_TIMER)
# Airflow's StatsD metrics and the instance's own figures, to CloudWatch (running/metrics.py),
# on every role: Airflow sends its datagrams to STATSD_PORT on loopback.
METRICS_UNIT = "airflow-metrics.service"
STATSD_PORT = 8125
# Airflow's [metrics] statsd_prefix: the first part of every metric name it sends.
STATSD_PREFIX = "airflow"
# A worker of an Auto Scaling group watches IMDS for its termination and leaves without
# killing a task (running/leave.py): it stops taking tasks, lets the running ones finish
# (WORKER_SERVICE's warm shutdown), puts their logs in S3 and completes the group's
# lifecycle action. LEAVE_POLL_SECONDS: how often it asks IMDS.
LEAVE_UNIT = "airflow-worker-leave.service"
LEAVE_POLL_SECONDS = 5
# Host hardening (README "Host hardening"): network protocols never loaded, and the audit
# trail of the Airflow configuration: a path unit watches these and the service logs what
# changed (path, owner, mode, sha256) to the journal, as sudo logs each command there.
UNUSED_PROTOCOLS = ("dccp", "sctp", "rds", "tipc")
AUDITED_FILES = (ETC_AIRFLOW + "/tls", ETC_AIRFLOW + "/redis", "/etc/sudoers.d", "/etc/sudoers")
CONFIG_AUDIT_UNIT = "airflow-config-audit.service"
CONFIG_AUDIT_PATH = "airflow-config-audit.path"
CONFIG_AUDIT_SNAPSHOT = STATE_DIR + "/config-audit.json"
# Enabled at bake time; UNIT_FILES are all the unit files the image installs.
UNITS = (
    FIRSTBOOT_UNIT,
    FIRSTBOOT_ADMIN_UNIT,
    *SERVICE_UNITS,
    AIRFLOW_TARGET,
    *TIMERS,
    METRICS_UNIT,
    LEAVE_UNIT,
    WORKLOAD["socket"],
    CONFIG_AUDIT_PATH,
)
UNIT_FILES = (
    *UNITS,
    *(job["unit"] for job in HOUSEKEEPING),
    SECRETS_REFRESH_UNIT,
    WORKLOAD["unit"],
    WORKLOAD["slice"],
    CONFIG_AUDIT_UNIT,
)
JOURNALD_DROPIN = "/etc/systemd/journald.conf.d/airflow-ami.conf"
API_SERVER_UNIT = "airflow-api-server.service"
SCHEDULER_UNIT = "airflow-scheduler.service"
DAG_PROCESSOR_UNIT = "airflow-dag-processor.service"

# bundle/files/<name> -> (destination, mode); MYSQL_DROPIN stands for the OS's MySQL
# drop-in (os_facts.mysql_dropin in settings.json), MYSQL_UNIT_DROPIN for a drop-in
# of MySQL's unit (os_facts.mysql_unit): both written before MySQL (re)starts.
MYSQL_DROPIN = "mysql-dropin"
MYSQL_UNIT_DROPIN = "mysql-unit-dropin"
# REDIS_UNIT_DROPIN: a drop-in of Redis's unit (os_facts.redis_unit).
REDIS_UNIT_DROPIN = "redis-unit-dropin"
RENDERED_FILES = [
    ("airflow.cfg", AIRFLOW_CFG, 0o644),
    ("webserver_config.py", AIRFLOW_HOME + "/webserver_config.py", 0o644),
    ("airflow_ami_statsd.py", AIRFLOW_HOME + "/config/airflow_ami_statsd.py", 0o644),
    ("airflow_local_settings.py", AIRFLOW_HOME + "/config/airflow_local_settings.py", 0o644),
    ("airflow.env", AIRFLOW_ENV, 0o644),
    ("airflow-cli.sh", AIRFLOW_CLI, 0o755),
    ("sudoers-airflow-ami", "/etc/sudoers.d/airflow-ami", 0o440),
    ("airflow-ami-backup.sh", BACKUP_CLI, 0o755),
    ("mysql-airflow.cnf", MYSQL_DROPIN, 0o644),
    ("mysql-unit-airflow.conf", MYSQL_UNIT_DROPIN, 0o644),
    ("redis-unit-airflow.conf", REDIS_UNIT_DROPIN, 0o644),
    ("journald-airflow-ami.conf", JOURNALD_DROPIN, 0o644),
    ("sysctl-airflow-ami.conf", "/etc/sysctl.d/90-airflow-ami.conf", 0o644),
    ("modprobe-airflow-ami.conf", "/etc/modprobe.d/airflow-ami.conf", 0o644),
    ("limits-airflow-ami.conf", "/etc/security/limits.d/90-airflow-ami.conf", 0o644),
] + [(unit, SYSTEMD_DIR + "/" + unit, 0o644) for unit in UNIT_FILES]
