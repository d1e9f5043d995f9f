"""The Airflow environment: which Python, uv, the venv and its spec, Airflow's own variables."""

import collections
import json
import os
import subprocess

from . import layout as L
from .envfile import read_env_file
from .runner import sha256_file

# Airflow 3.3's providers (mysql, fab, amazon, ...) need Python 3.11; `auto` takes the
# system python3 from there on, else a uv-managed one.
MIN_AUTO_PYTHON = (3, 11)

AIRFLOW_PROVIDERS = ["apache-airflow-providers-fab", "mysqlclient"]
# celery: a cluster's controller and workers (CeleryExecutor, Redis); amazon: S3 and friends;
# statsd: the metrics client Airflow sends to airflow-metrics.service with.
AIRFLOW_EXTRAS = "mysql,amazon,celery,statsd"

# The Celery broker's URL in secrets.env (a controller's and a worker's).
BROKER_URL_VARIABLE = "AIRFLOW__CELERY__BROKER_URL"

# request: what uv is asked for (a path or a version); system: it is /usr/bin/python3
PythonChoice = collections.namedtuple("PythonChoice", "request minor system")


def python_minor(python):
    out = subprocess.check_output([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
    return out.decode().strip()


def system_python_ok(ctx):
    """The system python3 if new enough for Airflow and allowed by python_version."""
    want = str(ctx.settings["python_version"])
    for cand in ("/usr/bin/python3",):
        if not os.path.exists(cand):
            continue
        minor = python_minor(cand)
        major, mnr = (int(x) for x in minor.split("."))
        if want == "auto" and (major, mnr) >= MIN_AUTO_PYTHON:
            return cand, minor
        if want == minor:
            return cand, minor
    return None, None


def wanted_python(ctx):
    """The PythonChoice for Airflow: the system python3 if it will do, else a uv-managed one."""
    path, minor = system_python_ok(ctx)
    if path:
        return PythonChoice(path, minor, True)
    want = str(ctx.settings["python_version"])
    minor = "3.12" if want == "auto" else want
    return PythonChoice(minor, minor, False)


def uv_bin():
    return os.path.join(L.BUILD_DIR, "uv", "bin", "uv")


def uv_env(ctx):
    env = {
        "UV_CACHE_DIR": os.path.join(L.BUILD_DIR, "uv-cache"),
        "UV_PYTHON_INSTALL_DIR": os.path.join(L.AIRFLOW_HOME, "python"),
        "UV_NATIVE_TLS": "1",
        "UV_NO_PROGRESS": "1",
        "UV_LINK_MODE": "copy",
    }
    if ctx.settings["index_url"]:
        env["UV_DEFAULT_INDEX"] = ctx.settings["index_url"]
        env["UV_INDEX_URL"] = ctx.settings["index_url"]
    if ctx.settings["extra_ca_bundle"]:
        env["SSL_CERT_FILE"] = ctx.facts.ca_bundle
    return env


def venv_spec(ctx, python):
    """Everything that decides the venv's contents (on Python ``python``, a minor
    version); a change means reinstall."""
    constraints = constraints_path()
    digest = None
    if os.path.exists(constraints):
        digest = sha256_file(constraints)
    return {
        "airflow_version": ctx.settings["airflow_version"],
        "python": python,
        "extras": sorted(ctx.settings["extra_python_packages"]),
        "constraints_sha256": digest,
        "providers": AIRFLOW_PROVIDERS,
        "airflow_extras": AIRFLOW_EXTRAS,
    }


def constraints_path():
    return os.path.join(L.BUILD_DIR, "constraints.txt")


def venv_is_current(spec):
    """Does the venv's stamp say it was built to ``spec`` (venv_spec)?"""
    if not os.path.isfile(L.VENV_SPEC_STAMP) or not os.path.exists(L.AIRFLOW_BIN):
        return False
    with open(L.VENV_SPEC_STAMP) as fh:
        stamp = json.load(fh)
    wanted = dict(spec)
    # the constraints file is gone after cleanup; the rest must match
    if wanted["constraints_sha256"] is None:
        del wanted["constraints_sha256"]
    return {k: v for k, v in stamp.items() if k in wanted} == wanted


def airflow_env(ctx, extra=None):
    env = {
        "AIRFLOW_HOME": L.AIRFLOW_HOME,
        "AIRFLOW_CONFIG": L.AIRFLOW_CFG,
        "HOME": L.AIRFLOW_HOME,
        "PATH": L.VENV + "/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    }
    env.update(extra or {})
    return env


def service_env(ctx):
    """The environment the Airflow units run with: Airflow's own, then their env files."""
    env = airflow_env(ctx)
    for path in (L.AIRFLOW_ENV, L.ROLE_ENV, L.SECRETS_ENV):
        if os.path.exists(path):
            env.update(read_env_file(path))
    return env


def recorded_role():
    """The role first boot recorded for this instance (a file in ROLE_DIR), or None."""
    roles = [r for r in L.ROLES if os.path.exists(os.path.join(L.ROLE_DIR, r))]
    return roles[0] if len(roles) == 1 else None
