"""`provision.py install`: MySQL + Airflow baked into the image, no secrets."""

import glob
import grp
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile

from ..shared import layout as L
from ..shared import systemd
from ..shared.airflowenv import (
    AIRFLOW_EXTRAS,
    AIRFLOW_PROVIDERS,
    airflow_env,
    constraints_path,
    python_minor,
    uv_bin,
    uv_env,
    venv_is_current,
    venv_spec,
    wanted_python,
)
from ..shared.mysqlctl import mysql_sql, schema_revision, wait_for_mysql
from ..shared.runner import StepFailed, real_run_only, run_steps, sha256_file
from ..shared.secretgen import alphanumeric, fernet_key, sql_string
from .airflowcfg import airflow_cfg_secret_options
from .netfetch import fetch_bytes


class InstallState(object):
    """What an install step leaves for a later one."""

    def __init__(self):
        # write_mysql_dropin changed MySQL's configuration: start_mysql must restart it
        self.restart_mysql = False


# --------------------------------------------------------------------------- helpers
def bundle_file(ctx, relpath):
    return os.path.join(ctx.bundle, relpath)


# --------------------------------------------------------------------------- steps
def check_running_as_root(ctx):
    if os.geteuid() != 0:
        if ctx.dry_run:
            ctx.info("not root: fine for a dry run, a real run needs root")
            return None
        raise StepFailed("provisioning must run as root (sudo)")
    return None


def trust_extra_ca_bundle(ctx):
    rel = ctx.settings["extra_ca_bundle"]
    if not rel:
        ctx.info("no extra_ca_bundle set")
        return "skipped"
    with open(bundle_file(ctx, rel), "rb") as fh:
        pem = fh.read()
    if b"BEGIN CERTIFICATE" not in pem:
        raise StepFailed("%s holds no PEM certificate" % rel)
    if ctx.write_file(ctx.facts.ca_anchor, pem):
        ctx.act("rebuild the OS trust store", ctx.os.update_trust_store, ctx)
    ctx.os.configure_package_manager_ca(ctx, ctx.facts.ca_bundle)
    # every later client (uv, pip, curl, urllib) in this run uses the same bundle
    for var in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "PIP_CERT"):
        ctx.env[var] = ctx.facts.ca_bundle
        os.environ[var] = ctx.facts.ca_bundle
    ctx.env["UV_NATIVE_TLS"] = "1"
    return None


def point_package_manager_at_mirror(ctx):
    mirror = ctx.settings["os_mirror"]
    if not mirror:
        ctx.info("no os_mirror set")
        return "skipped"
    ctx.os.configure_mirror(ctx, mirror)
    return None


def refresh_package_index(ctx):
    ctx.act("refresh the %s package index" % ctx.os.name, ctx.os.refresh, ctx)
    ctx.changed = False  # refreshing metadata is not a change to the image's contents


def install_mysql_server(ctx):
    version = str(ctx.settings["mysql_version"])
    ctx.os.install_mysql_server(ctx, version)
    rc, out = ctx.probe(["mysqld", "--version"])
    ctx.info(out.strip() if rc == 0 else "mysqld --version failed")


def install_openssl(ctx):
    """api_tls self-signed: first boot makes the API's certificate with openssl."""
    if ctx.settings["api_tls"] != "self-signed":
        return "skipped"
    missing = ctx.os.missing(ctx, ["openssl"])
    if missing:
        ctx.act("install openssl", ctx.os.install, ctx, missing)
    return None


def install_redis(ctx):
    """The Celery broker of a cluster's controller; it runs on that role only (its unit's drop-in)."""
    package = ctx.facts.redis_package
    if ctx.os.is_installed(ctx, package):
        ctx.info("%s already installed" % package)
        return "skipped"
    ctx.act("install %s" % package, ctx.os.install_redis, ctx, package)
    return None


def install_rendered_file(ctx, name, dest, mode):
    """bundle/files/<name> to ``dest`` (root-owned); True when that changed it."""
    src = bundle_file(ctx, "files/" + name)
    if not os.path.exists(src):
        raise StepFailed("bundle is missing files/%s" % name)
    with open(src, "rb") as fh:
        data = fh.read()
    return ctx.write_file(dest, data, mode, "root", "root")


def mysql_dropins(ctx):
    """{layout destination: path on this OS} of the MySQL drop-ins."""
    return {
        L.MYSQL_DROPIN: ctx.facts.mysql_dropin,
        L.MYSQL_UNIT_DROPIN: "%s/%s.d/airflow-ami.conf" % (L.SYSTEMD_DIR, ctx.facts.mysql_unit),
    }


def write_mysql_dropin(ctx):
    # the drop-ins' own step, before MySQL first starts: a change means a restart
    paths = mysql_dropins(ctx)
    for name, dest, mode in L.RENDERED_FILES:
        if dest in paths and install_rendered_file(ctx, name, paths[dest], mode):
            ctx.state.restart_mysql = True
            if dest == L.MYSQL_UNIT_DROPIN:
                ctx.act("reload systemd's units", systemd.systemctl, ctx, "daemon-reload")


def initialize_mysql_datadir(ctx):
    """Oracle's packages initialize with an expired random root password at first start;
    initializing ourselves (insecure = no password) lets root be socket-only."""
    datadir = ctx.facts.mysql_datadir
    if os.path.isdir(os.path.join(datadir, "mysql")):
        ctx.info("data directory %s already initialized" % datadir)
        return "skipped"
    if ctx.os.name == "apt":
        ctx.info("Debian's postinst initializes the data directory")
        return "skipped"
    ctx.act(
        "initialize %s (root without password, socket auth set next)" % datadir,
        ctx.run,
        ["mysqld", "--initialize-insecure", "--user=mysql", "--datadir=" + datadir],
    )
    return None


def start_mysql(ctx):
    unit = ctx.facts.mysql_unit
    systemd.enable(ctx, unit)
    if not systemd.is_active(ctx, unit) or ctx.state.restart_mysql:
        ctx.act("(re)start %s" % unit, systemd.systemctl, ctx, "restart", unit)


@real_run_only("check that MySQL answers on port %d" % L.MYSQL_PORT)
def check_mysql_port(ctx):
    wait_for_mysql(ctx)
    port = mysql_sql(ctx, "SELECT @@port, @@bind_address;", quiet=True).split()
    ctx.info("MySQL listening on %s:%s" % (port[1], port[0]))
    if port[0] != str(L.MYSQL_PORT):
        raise StepFailed("MySQL is on port %s, not %d" % (port[0], L.MYSQL_PORT))


@real_run_only("drop anonymous users, remote root and the test database; root via socket")
def secure_mysql(ctx):
    """What mysql_secure_installation does, non-interactively and idempotently."""
    plugin = mysql_sql(
        ctx,
        "SELECT COUNT(*) FROM information_schema.plugins WHERE "
        "plugin_name='auth_socket' AND plugin_status='ACTIVE';",
        quiet=True,
    )
    if plugin.strip() == "0":
        # Oracle's builds ship the plugin but do not load it; INSTALL persists it
        ctx.act(
            "install the auth_socket plugin (root and airflow authenticate by socket)",
            mysql_sql,
            ctx,
            "INSTALL PLUGIN auth_socket SONAME 'auth_socket.so';",
        )
    before = mysql_sql(
        ctx,
        "SELECT CONCAT(user,'@',host,':',plugin) FROM mysql.user ORDER BY 1; SHOW DATABASES LIKE 'test';",
        quiet=True,
    )
    users = [line for line in before.splitlines() if "@" in line]
    stmts = []
    for line in users:
        account, _, plugin = line.rpartition(":")
        user, _, host = account.partition("@")
        if user == "" or (user == "root" and host != "localhost"):
            stmts.append("DROP USER %s@%s;" % (sql_string(user), sql_string(host)))
        elif user == "root" and plugin != "auth_socket":
            stmts.append("ALTER USER 'root'@'localhost' IDENTIFIED WITH auth_socket;")
    if "test" in before.split():
        stmts.append("DROP DATABASE test;")
    rows = mysql_sql(
        ctx, "SELECT COUNT(*) FROM mysql.db WHERE Db='test' OR Db LIKE 'test\\\\_%';", quiet=True
    ).strip()
    if rows not in ("", "0"):
        stmts.append("DELETE FROM mysql.db WHERE Db='test' OR Db LIKE 'test\\\\_%';")
    if not stmts:
        ctx.info("already secure: %s" % ", ".join(users))
        return
    stmts.append("FLUSH PRIVILEGES;")
    ctx.act("harden MySQL (%d statements)" % (len(stmts) - 1), mysql_sql, ctx, "\n".join(stmts))


@real_run_only(
    "create database airflow (utf8mb4_unicode_ci) and airflow@localhost (auth_socket until first boot)"
)
def create_airflow_database(ctx):
    """Database + airflow@localhost.  At bake time the user authenticates by socket as the
    `airflow` OS user (no password exists in the image); first boot re-keys it with a
    generated password."""
    have = mysql_sql(
        ctx,
        "SELECT COUNT(*) FROM information_schema.schemata WHERE "
        "schema_name='airflow'; SELECT plugin FROM mysql.user WHERE "
        "user='airflow' AND host='localhost';",
        quiet=True,
    ).split()
    stmts = []
    if have[0] == "0":
        stmts.append("CREATE DATABASE airflow CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;")
    if len(have) < 2:
        stmts.append("CREATE USER 'airflow'@'localhost' IDENTIFIED WITH auth_socket;")
    elif have[1] != "auth_socket" and not os.path.exists(L.FIRSTBOOT_MARKER):
        stmts.append("ALTER USER 'airflow'@'localhost' IDENTIFIED WITH auth_socket;")
    grants = mysql_sql(ctx, "SHOW GRANTS FOR 'airflow'@'localhost';", quiet=True) if len(have) >= 2 else ""
    if "ON `airflow`.*" not in grants:
        stmts.append("GRANT ALL PRIVILEGES ON airflow.* TO 'airflow'@'localhost';")
    if stmts:
        ctx.act("set up the airflow database and user", mysql_sql, ctx, "\n".join(stmts))


@real_run_only("create airflow_backup@localhost (read-only dumps, socket auth as the airflow OS user)")
def create_backup_account(ctx):
    """airflow_backup@localhost: what a consistent dump needs and no more (read the airflow
    database; FLUSH_TABLES, which mysqldump --single-transaction asks for on MySQL 9), by
    socket as the `airflow` OS user: the backup service holds no password."""
    have = mysql_sql(
        ctx,
        "SELECT COUNT(*) FROM mysql.user WHERE user='%s' AND host='localhost';" % L.BACKUP_MYSQL_USER,
        quiet=True,
    ).strip()
    if have != "0":
        ctx.info("%s@localhost exists" % L.BACKUP_MYSQL_USER)
        return
    account = "'%s'@'localhost'" % L.BACKUP_MYSQL_USER
    ctx.act(
        "create %s (read-only dumps, socket auth as %s)" % (account, L.AIRFLOW_USER),
        mysql_sql,
        ctx,
        "\n".join(
            [
                "CREATE USER %s IDENTIFIED WITH auth_socket AS '%s';" % (account, L.AIRFLOW_USER),
                "GRANT SELECT, LOCK TABLES, SHOW VIEW, EVENT, TRIGGER ON airflow.* TO %s;" % account,
                "GRANT FLUSH_TABLES ON *.* TO %s;" % account,
            ]
        ),
    )


def nologin():
    return "/usr/sbin/nologin" if os.path.exists("/usr/sbin/nologin") else "/sbin/nologin"


def create_airflow_user(ctx):
    try:
        pwd.getpwnam(L.AIRFLOW_USER)
        return
    except KeyError:
        pass
    ctx.act(
        "create system user %s (home %s, no login)" % (L.AIRFLOW_USER, L.AIRFLOW_HOME),
        ctx.run,
        [
            "useradd",
            "--system",
            "--user-group",
            "--home-dir",
            L.AIRFLOW_HOME,
            "--no-create-home",
            "--shell",
            nologin(),
            L.AIRFLOW_USER,
        ],
    )


def create_task_user(ctx):
    """The user DAG authors' code runs as (layout.TASK_USER): its own group, which the
    services' user joins so both write and prune the task logs, and a home of its own."""
    try:
        pwd.getpwnam(L.TASK_USER)
    except KeyError:
        ctx.act(
            "create system user %s (home %s, no login)" % (L.TASK_USER, L.TASK_HOME),
            ctx.run,
            [
                "useradd",
                "--system",
                "--user-group",
                "--home-dir",
                L.TASK_HOME,
                "--no-create-home",
                "--shell",
                nologin(),
                L.TASK_USER,
            ],
        )
    try:
        members = grp.getgrnam(L.TASK_USER).gr_mem
    except KeyError:  # a dry run did not make it
        members = []
    if L.AIRFLOW_USER not in members:
        ctx.act(
            "let %s write the task logs (group %s)" % (L.AIRFLOW_USER, L.TASK_USER),
            ctx.run,
            ["usermod", "--append", "--groups", L.TASK_USER, L.AIRFLOW_USER],
        )
    ctx.ensure_dir(L.TASK_HOME, 0o700, L.TASK_USER, L.TASK_USER)


def create_airflow_directories(ctx):
    ctx.ensure_dir(L.AIRFLOW_HOME, 0o755, "root", L.AIRFLOW_USER)
    for sub in ("dags", "plugins"):
        ctx.ensure_dir(os.path.join(L.AIRFLOW_HOME, sub), 0o755, L.AIRFLOW_USER, L.AIRFLOW_USER)
    # Tasks' supervisors (the task user) write their logs; Airflow makes task log folders 775.
    ctx.ensure_dir(L.AIRFLOW_LOGS, 0o2775, L.AIRFLOW_USER, L.TASK_USER)
    ctx.ensure_dir(L.ETC_AIRFLOW, 0o755, "root", "root")
    # What first boot fills, here from the start, as first boot makes them: the config audit's
    # path unit watches them from boot (a path that does not exist yet hides its parent's changes).
    ctx.ensure_dir(os.path.dirname(L.API_TLS_KEY), 0o751, "root", L.AIRFLOW_USER)
    ctx.ensure_dir(os.path.dirname(L.REDIS_CONF), 0o750, "root", ctx.facts.redis_user)
    # Readable: the backup job (the airflow user) follows first boot's records in it; it holds
    # no secret (those are in ETC_AIRFLOW, mode 600).
    ctx.ensure_dir(L.STATE_DIR, 0o755, "root", "root")
    ctx.ensure_dir(L.BUILD_DIR, 0o700, "root", "root")
    ctx.ensure_dir(L.BACKUP_DIR, 0o700, L.AIRFLOW_USER, L.AIRFLOW_USER)


def install_uv(ctx):
    """uv from the package index, fetched by pip (the index's ordinary client) in a bootstrap
    venv; the wheel must have the pinned sha256 before anything in it is unpacked."""
    version = ctx.settings["uv_version"]
    target = uv_bin()
    if os.path.exists(target):
        rc, out = ctx.probe([target, "--version"])
        if rc == 0 and version in out.split():
            ctx.info(out.strip())
            return
    install_build_only(ctx, ctx.os.missing(ctx, ctx.os.venv_packages))
    where = ctx.settings["index_url"] or "pip's default index"
    ctx.act(
        "download the uv %s wheel from %s, check its sha256 and unpack it to %s" % (version, where, target),
        download_uv,
        ctx,
        version,
        target,
    )


def download_uv(ctx, version, target):
    # a scratch directory of its own: no wheel left by an earlier, failed run is picked up
    scratch = tempfile.mkdtemp(prefix="uv-download-", dir=L.BUILD_DIR)
    try:
        boot = os.path.join(scratch, "pip-bootstrap")
        wheels = os.path.join(scratch, "wheels")
        ctx.run([sys.executable, "-m", "venv", boot])
        # --python-version: uv's wheel says Requires-Python >= 3.8; the binary inside runs on any.
        command = [os.path.join(boot, "bin", "pip"), "download", "--no-deps", "--only-binary=:all:"]
        command += ["--python-version", "3.8", "--disable-pip-version-check", "--dest", wheels]
        # The index goes by environment: its URL may hold a token, which no argument may.
        index = {"PIP_INDEX_URL": ctx.settings["index_url"]} if ctx.settings["index_url"] else {}
        # PIP_CERT: set by trust_extra_ca_bundle when there is an extra CA.
        ctx.run([*command, "uv==" + version], env=index)
        wheel = next(os.path.join(wheels, n) for n in os.listdir(wheels) if n.endswith(".whl"))
        check_uv_wheel(wheel, ctx.settings["uv_wheel_sha256"])
        unpack_uv(wheel, target)
    finally:
        shutil.rmtree(scratch)
    ctx.info(ctx.run([target, "--version"], quiet=True)[1].strip())


def check_uv_wheel(wheel, expected):
    actual = sha256_file(wheel)
    if actual != expected.strip().lower():
        raise StepFailed(
            "%s has sha256 %s, but uv_wheel_sha256 is %s: nothing was unpacked; "
            "give uv_wheel_sha256 of uv_version's wheel (the defaults: airflow_ami/settings/bake.py)"
            % (os.path.basename(wheel), actual, expected)
        )


def unpack_uv(wheel, target):
    with zipfile.ZipFile(wheel) as zf:
        member = [n for n in zf.namelist() if n.endswith(".data/scripts/uv")]
        if not member:
            raise StepFailed("%s has no uv binary" % os.path.basename(wheel))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with zf.open(member[0]) as src, open(target + ".tmp", "wb") as dst:
            shutil.copyfileobj(src, dst)
    os.chmod(target + ".tmp", 0o755)
    os.rename(target + ".tmp", target)


def fetch_constraints(ctx):
    dest = constraints_path()
    local = ctx.settings["constraints_file"]
    url = ctx.settings["constraints_url"]
    minor = wanted_python(ctx).minor
    if local:
        with open(bundle_file(ctx, local), "rb") as fh:
            data = fh.read()
        source = local
    elif url:
        url = url.replace("{python_minor}", minor)
        if ctx.dry_run:
            # the download itself changes nothing, but a dry run must not need the network
            ctx.would("download constraints %s to %s" % (url, dest))
            return None
        data = fetch_bytes(url)
        source = url
    else:
        ctx.info("no constraints set: resolving freely")
        return "skipped"
    ctx.info("constraints from %s (python %s)" % (source, minor))
    ctx.write_file(dest, data, 0o644)
    return None


def install_build_packages(ctx):
    python = wanted_python(ctx)
    if venv_is_current(venv_spec(ctx, python.minor)):
        ctx.info("venv is current: nothing to build")
        return "skipped"
    wanted = ctx.os.build_packages(ctx, python.system)
    missing = ctx.os.missing(ctx, wanted)
    if not missing:
        ctx.info("already present: %s" % " ".join(wanted))
        return None
    install_build_only(ctx, missing)
    return None


def install_build_only(ctx, packages):
    """Install packages and record them, so remove_build_packages takes them out again."""
    if packages:
        ctx.act(
            "install build-only packages %s (removed after the build)" % " ".join(packages),
            record_and_install,
            ctx,
            packages,
        )


def record_and_install(ctx, packages):
    recorded = []
    if os.path.isfile(L.BUILD_PACKAGES_RECORD):
        with open(L.BUILD_PACKAGES_RECORD) as fh:
            recorded = json.load(fh)
    ctx.write_file(L.BUILD_PACKAGES_RECORD, json.dumps(sorted(set(recorded) | set(packages))) + "\n", 0o600)
    ctx.os.install(ctx, packages)


def install_python_for_airflow(ctx):
    request, minor, system = wanted_python(ctx)
    if system:
        ctx.info("system python %s (%s) is new enough" % (minor, request))
        return "skipped"
    pydir = os.path.join(L.AIRFLOW_HOME, "python")
    found = glob.glob(os.path.join(pydir, "cpython-%s.*" % minor))
    if found:
        ctx.info("uv-managed python present: %s" % os.path.basename(found[0]))
        return None
    ctx.act(
        "install a uv-managed python %s into %s" % (minor, pydir),
        ctx.run,
        [uv_bin(), "python", "install", minor],
        env=uv_env(ctx),
    )
    return None


def create_airflow_venv(ctx):
    request, minor, _ = wanted_python(ctx)
    py = os.path.join(L.VENV, "bin", "python")
    if os.path.exists(py):
        try:
            have = python_minor(py)
        except (OSError, subprocess.CalledProcessError):
            have = None
        if have == minor:
            return
        ctx.act("replace venv on python %s with python %s" % (have, minor), shutil.rmtree, L.VENV)
    ctx.act(
        "create venv %s with python %s" % (L.VENV, minor),
        ctx.run,
        [uv_bin(), "venv", "--python", request, L.VENV],
        env=uv_env(ctx),
    )


def install_airflow(ctx):
    spec = venv_spec(ctx, wanted_python(ctx).minor)
    if venv_is_current(spec):
        ctx.info("venv already holds this spec: %s" % json.dumps(spec))
        return
    version = spec["airflow_version"]
    extras = list(ctx.settings["extra_python_packages"])
    reqs = ["apache-airflow[%s]==%s" % (AIRFLOW_EXTRAS, version), *AIRFLOW_PROVIDERS, *extras]
    argv = [uv_bin(), "pip", "install", "--python", L.VENV + "/bin/python", "--compile-bytecode"]
    if os.path.exists(constraints_path()):
        argv += ["--constraints", constraints_path()]
    ctx.act("install %s" % " ".join(reqs), install_into_venv, ctx, argv + reqs, spec)


def install_into_venv(ctx, argv, spec):
    version = spec["airflow_version"]
    ctx.run(argv, env=uv_env(ctx))
    # as the airflow user with its AIRFLOW_HOME: importing Airflow elsewhere would make a
    # stray ~/airflow (and possibly an airflow.cfg with generated keys) in root's home
    out = ctx.run(
        [L.VENV + "/bin/python", "-c", "import airflow, MySQLdb; print(airflow.__version__)"],
        quiet=True,
        env=airflow_env(ctx),
        user=L.AIRFLOW_USER,
        cwd=L.AIRFLOW_HOME,
    )[1]
    if out.strip() != version:
        raise StepFailed("venv has airflow %r, wanted %s" % (out.strip(), version))
    ctx.write_file(L.VENV_SPEC_STAMP, json.dumps(spec, sort_keys=True) + "\n")


def remove_build_packages(ctx):
    if not os.path.isfile(L.BUILD_PACKAGES_RECORD):
        ctx.info("no build-only packages recorded")
        return "skipped"
    with open(L.BUILD_PACKAGES_RECORD) as fh:
        recorded = json.load(fh)
    present = [p for p in recorded if ctx.os.is_installed(ctx, p)]
    if present:
        # keep the shared libraries the built extension needs (e.g. libmysqlclient)
        keep = runtime_library_packages(ctx)
        ctx.act(
            "keep runtime packages %s; remove build-only packages %s"
            % (" ".join(keep) or "-", " ".join(present)),
            remove_build_only,
            ctx,
            keep,
            present,
        )
    ctx.remove(L.BUILD_PACKAGES_RECORD)
    return None


def remove_build_only(ctx, keep, remove):
    for pkg in keep:
        ctx.os.keep_package(ctx, pkg)
    ctx.os.remove_packages(ctx, remove)
    ctx.run([L.VENV + "/bin/python", "-c", "import MySQLdb"], quiet=True)


def runtime_library_packages(ctx):
    pkgs = set()
    for so in glob.glob(L.VENV + "/lib/python3*/site-packages/MySQLdb/_mysql*.so"):
        _rc, out = ctx.probe(["ldd", so])
        for line in out.splitlines():
            if "=>" in line and "/" in line.split("=>")[1]:
                lib = line.split("=>")[1].split("(")[0].strip()
                owner = ctx.os.owner_of(ctx, lib)
                if owner and "mysql" in owner:
                    pkgs.add(owner)
    return sorted(pkgs)


def install_config_files(ctx):
    changed_units = False
    placed = {L.REDIS_UNIT_DROPIN: "%s/%s.d/airflow-ami.conf" % (L.SYSTEMD_DIR, ctx.facts.redis_unit)}
    for name, dest, mode in L.RENDERED_FILES:
        if dest in (L.MYSQL_DROPIN, L.MYSQL_UNIT_DROPIN):
            continue  # written by write_mysql_dropin
        path = placed.get(dest, dest)
        if install_rendered_file(ctx, name, path, mode) and path.startswith(L.SYSTEMD_DIR):
            changed_units = True
    if changed_units:
        ctx.act("reload systemd's units", systemd.systemctl, ctx, "daemon-reload")


def install_provisioning_code(ctx):
    """First boot needs this code and the settings after the bundle is gone."""
    src = os.path.join(ctx.bundle, "scripts")
    for root, dirs, files in os.walk(src):
        dirs[:] = [d for d in dirs if d != "__pycache__" and not d.startswith(".")]
        for name in files:
            if name.endswith((".pyc", ".toml")):
                continue
            path = os.path.join(root, name)
            rel = os.path.relpath(path, src)
            with open(path, "rb") as fh:
                mode = 0o755 if name == "provision.py" else 0o644
                ctx.write_file(os.path.join(L.CODE_DIR, rel), fh.read(), mode)
    ctx.write_file(
        L.BAKED_SETTINGS, json.dumps(baked_settings(ctx.settings), indent=2, sort_keys=True) + "\n"
    )


def baked_settings(settings):
    """settings.json as the image keeps it: the build's sources (mirror, index, whose URL
    may hold a token, extra CA) left out unless keep_build_sources."""
    if settings["keep_build_sources"]:
        return settings
    return dict(settings, **{name: "" for name in L.BUILD_SOURCE_SETTINGS})


@real_run_only("run `airflow db migrate` (socket auth, throwaway keys in env only)")
def migrate_airflow_schema(ctx):
    """Bake-time migration over the socket as the airflow OS user; throwaway keys live
    only in this process's environment, so first boot has nothing to migrate."""
    url = "mysql+mysqldb://airflow@localhost/airflow?charset=utf8mb4&unix_socket=" + ctx.facts.mysql_socket
    env = airflow_env(
        ctx,
        {
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": url,
            "AIRFLOW__CORE__FERNET_KEY": ctx.add_secret(fernet_key()),
            "AIRFLOW__API_AUTH__JWT_SECRET": ctx.add_secret(alphanumeric(64)),
            "AIRFLOW__API__SECRET_KEY": ctx.add_secret(alphanumeric(64)),
        },
    )
    rc, _ = ctx.run(
        [L.AIRFLOW_BIN, "db", "check-migrations", "-t", "1"],
        env=env,
        user=L.AIRFLOW_USER,
        cwd=L.AIRFLOW_HOME,
        check=False,
    )
    if rc == 0:
        ctx.info("schema is current")
    else:
        t0 = time.time()
        ctx.act(
            "migrate the Airflow schema",
            ctx.run,
            [L.AIRFLOW_BIN, "db", "migrate"],
            env=env,
            user=L.AIRFLOW_USER,
            cwd=L.AIRFLOW_HOME,
        )
        ctx.info("migrated in %.1f s" % (time.time() - t0))


@real_run_only("record the schema's revision for first boot to compare")
def record_the_schema_revision(ctx):
    """First boot compares the database's revision with this one instead of importing Airflow."""
    ctx.write_file(L.SCHEMA_REVISION_RECORD, schema_revision(ctx, L.MYSQL_DATABASE) + "\n", 0o644)


def enable_airflow_units(ctx):
    for unit in L.UNITS:
        systemd.enable(ctx, unit)


@real_run_only("check that airflow.cfg holds no secret and secrets.env waits for first boot")
def check_no_secrets_baked(ctx):
    if not os.path.exists(L.AIRFLOW_CFG):
        raise StepFailed("%s missing" % L.AIRFLOW_CFG)
    found = airflow_cfg_secret_options(L.AIRFLOW_CFG)
    if found:
        raise StepFailed("airflow.cfg holds secret values for: %s" % ", ".join(found))
    if os.path.exists(L.SECRETS_ENV) and not os.path.exists(L.FIRSTBOOT_MARKER):
        raise StepFailed("%s exists before first boot" % L.SECRETS_ENV)


STEPS = [
    check_running_as_root,
    trust_extra_ca_bundle,
    point_package_manager_at_mirror,
    refresh_package_index,
    install_mysql_server,
    install_openssl,
    install_redis,
    write_mysql_dropin,
    initialize_mysql_datadir,
    start_mysql,
    check_mysql_port,
    secure_mysql,
    create_airflow_user,
    create_task_user,
    create_airflow_database,
    create_backup_account,
    create_airflow_directories,
    install_uv,
    fetch_constraints,
    install_build_packages,
    install_python_for_airflow,
    create_airflow_venv,
    install_airflow,
    remove_build_packages,
    install_config_files,
    install_provisioning_code,
    migrate_airflow_schema,
    record_the_schema_revision,
    enable_airflow_units,
    check_no_secrets_baked,
]


def main(ctx):
    ctx.state = InstallState()
    return run_steps(ctx, STEPS, "install")


if __name__ == "__main__":  # pragma: no cover
    sys.exit("run scripts/provision.py install")
