"""Instance paths (docs/architecture.md "On the instance") and the rendered-file map."""

AIRFLOW_HOME = "/opt/airflow"
VENV = AIRFLOW_HOME + "/venv"
AIRFLOW_CFG = AIRFLOW_HOME + "/airflow.cfg"
AIRFLOW_USER = "airflow"
ETC_AIRFLOW = "/etc/airflow"
AIRFLOW_ENV = ETC_AIRFLOW + "/airflow.env"
SECRETS_ENV = ETC_AIRFLOW + "/secrets.env"
ADMIN_PASSWORD_FILE = ETC_AIRFLOW + "/admin-password"
SETTINGS_COPY = "/etc/airflow-ami/settings.json"
CODE_DIR = "/usr/local/lib/airflow-ami"
STATE_DIR = "/var/lib/airflow-ami"
FIRSTBOOT_MARKER = STATE_DIR + "/firstboot.json"
BUILD_DIR = STATE_DIR + "/build"  # uv, its cache, constraints: removed by cleanup
BUILD_PACKAGES_RECORD = STATE_DIR + "/build-packages.json"
VENV_SPEC_STAMP = VENV + "/.airflow-ami-spec.json"
UV_VERSION = "0.13.9"
MYSQL_DATABASE = "airflow"
MYSQL_USER = "airflow"
UNITS = (
    "airflow-firstboot.service",
    "airflow-scheduler.service",
    "airflow-dag-processor.service",
    "airflow-api-server.service",
    "airflow-triggerer.service",
    "airflow.target",
)
SYSTEMD_DIR = "/etc/systemd/system"

# bundle/files/<name> -> (destination, mode, group); "mysql-dropin" is per-OS.
RENDERED_FILES = [
    ("airflow.cfg", AIRFLOW_CFG, 0o644, None),
    ("webserver_config.py", AIRFLOW_HOME + "/webserver_config.py", 0o644, None),
    ("airflow.env", AIRFLOW_ENV, 0o644, None),
    ("airflow-cli.sh", "/usr/local/bin/airflow", 0o755, None),
    ("mysql-airflow.cnf", "mysql-dropin", 0o644, None),
] + [(unit, SYSTEMD_DIR + "/" + unit, 0o644, None) for unit in UNITS]
