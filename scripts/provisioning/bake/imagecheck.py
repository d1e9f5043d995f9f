"""`cleanup` (last provisioner) and `validate-image`, which asserts what cleanup did.

Each cleanup step has a matching check; validate-image runs every check and fails
listing each trace left behind.
"""

import fnmatch
import glob
import os
import re
import subprocess

from ..shared import layout as L
from ..shared import systemd
from ..shared.runner import StepFailed
from .airflowcfg import airflow_cfg_secret_options

HISTORY_FILES = (
    ".bash_history",
    ".python_history",
    ".mysql_history",
    ".lesshst",
    ".viminfo",
    ".zsh_history",
    ".sqlite_history",
    ".wget-hsts",
)
# Packer's shell provisioner runs an uploaded script from /tmp while we run.
PACKER_SCRIPT = re.compile(r"^script_\d+\.sh$")
LOG_MAX_BYTES = 64 * 1024
ROTATED_LOG = re.compile(r"(\.\d+|\.gz|\.xz|\.old|-\d{8})$")


# What a booted machine keeps about itself that the next instance must not inherit:
# DHCP leases, cloud-init's per-instance data and semaphores, the package
# managers' transaction history, and download caches of the build's clients.
INSTANCE_STATE_GLOBS = (
    "/var/lib/dhcp/*.lease*",
    "/var/lib/dhclient/*.lease*",
    "/var/lib/NetworkManager/*.lease",
    "/var/lib/cloud/instances/*",
    "/var/lib/cloud/instance",
    "/var/lib/cloud/data",
    "/var/lib/cloud/sem",
    "/var/lib/yum/history/*",
    "/var/lib/dnf/history.sqlite*",
    "/root/.cache",
    "/home/*/.cache/pip",
    "/home/*/.cache/uv",
    L.BACKUP_DIR + "/*",
)
# cloud-init (or the local cloud) names each instance; the image says only this.
IMAGE_HOSTNAME = "localhost\n"
HOSTNAME_FILE = "/etc/hostname"


def instance_state_leftovers():
    return sorted(p for pattern in INSTANCE_STATE_GLOBS for p in glob.glob(pattern))


def hostname_problems():
    if not os.path.exists(HOSTNAME_FILE):
        return []
    with open(HOSTNAME_FILE) as fh:
        text = fh.read()
    mode = os.stat(HOSTNAME_FILE).st_mode & 0o7777
    found = [] if text == IMAGE_HOSTNAME else ["%s holds %r" % (HOSTNAME_FILE, text.strip())]
    return found + ([] if mode == 0o644 else ["%s has mode %o" % (HOSTNAME_FILE, mode)])


def home_dirs():
    homes = ["/root", *sorted(glob.glob("/home/*"))]
    return [h for h in homes if os.path.isdir(h)]


def authorized_keys_files():
    return [p for h in home_dirs() for p in glob.glob(h + "/.ssh/authorized_keys*")]


def history_files():
    return [
        os.path.join(h, f) for h in home_dirs() for f in HISTORY_FILES if os.path.lexists(os.path.join(h, f))
    ]


def aws_credential_paths():
    found = []
    for h in home_dirs():
        for name in (".aws/credentials", ".aws/config"):
            if os.path.exists(os.path.join(h, name)):
                found.append(os.path.join(h, name))
    if os.path.exists("/etc/environment"):
        with open("/etc/environment") as fh:
            if re.search(r"AWS_(SECRET_ACCESS_KEY|SESSION_TOKEN|ACCESS_KEY_ID)", fh.read()):
                found.append("/etc/environment")
    return found


def tmp_leftovers():
    left = []
    for d in ("/tmp", "/var/tmp"):
        for entry in sorted(os.listdir(d)) if os.path.isdir(d) else []:
            path = os.path.join(d, entry)
            if PACKER_SCRIPT.match(entry) or entry.startswith("systemd-private-"):
                continue
            if entry.startswith(".") and entry.endswith("-unix") and os.path.isdir(path):
                continue
            left.append(path)
    return left


def log_leftovers():
    left = []
    for root, _dirs, files in os.walk("/var/log"):
        if root.startswith("/var/log/journal"):
            for f in files:
                if "@" in f:  # archived journal file
                    left.append(os.path.join(root, f))
            continue
        for f in files:
            path = os.path.join(root, f)
            if ROTATED_LOG.search(f) or (
                os.path.isfile(path) and not os.path.islink(path) and os.path.getsize(path) > LOG_MAX_BYTES
            ):
                left.append(path)
    return left


def package_cache_leftovers():
    left = glob.glob("/var/cache/apt/archives/*.deb") + glob.glob("/var/cache/apt/*.bin")
    left += [
        p
        for p in glob.glob("/var/lib/apt/lists/*")
        if os.path.basename(p) not in ("lock", "partial", "auxfiles")
    ]
    for d in ("/var/cache/dnf", "/var/cache/yum"):
        left += glob.glob(d + "/*")
    return left


def mysql_auto_cnf(datadir):
    return os.path.join(datadir, "auto.cnf")


# Made by MySQL at its first start: TLS CA/server/client keys and the RSA key pair of
# caching_sha2_password.  Removed so each instance generates its own.
MYSQL_GENERATED_KEYS = (
    "ca.pem",
    "ca-key.pem",
    "server-cert.pem",
    "server-key.pem",
    "client-cert.pem",
    "client-key.pem",
    "private_key.pem",
    "public_key.pem",
)


def mysql_generated_keys(datadir):
    return [
        os.path.join(datadir, name)
        for name in MYSQL_GENERATED_KEYS
        if os.path.exists(os.path.join(datadir, name))
    ]


def left_out_leftovers():
    """Files under LEFT_OUT_PATHS that are not LEFT_OUT_KEPT."""
    found = []
    for path in L.LEFT_OUT_PATHS:
        if os.path.isdir(path) and not os.path.islink(path):
            found += [os.path.join(root, f) for root, _dirs, files in os.walk(path) for f in files]
        elif os.path.lexists(path):
            found.append(path)
    return sorted(p for p in found if not any(fnmatch.fnmatch(p, kept) for kept in L.LEFT_OUT_KEPT))


def stray_airflow_homes():
    """~/airflow made by any Airflow run without AIRFLOW_HOME (may hold generated keys)."""
    return [os.path.join(h, "airflow") for h in home_dirs() if os.path.isdir(os.path.join(h, "airflow"))]


def mysql_binary_logs(datadir):
    """Binary logs written before our drop-in turned them off (disable-log-bin)."""
    return sorted(glob.glob(datadir + "/binlog.[0-9]*") + glob.glob(datadir + "/binlog.index"))


def checks(ctx):
    """(name, list of offending paths or messages) for every hygiene rule."""
    results = []

    def add(name, found):
        results.append((name, found))

    add("ssh host keys removed", glob.glob("/etc/ssh/ssh_host_*"))
    add("no authorized_keys", authorized_keys_files())
    mid = ""
    if os.path.exists("/etc/machine-id"):
        with open("/etc/machine-id") as fh:
            mid = fh.read().strip()
    add("machine-id empty", ["/etc/machine-id holds %s" % mid] if mid else [])
    add(
        "no dbus machine-id copy",
        [
            p
            for p in ["/var/lib/dbus/machine-id"]
            if os.path.isfile(p) and not os.path.islink(p) and os.path.getsize(p) > 0
        ],
    )
    add(
        "no per-instance state (leases, cloud-init data, package history, caches)", instance_state_leftovers()
    )
    add("hostname is the image's", hostname_problems())
    add("package caches cleaned", package_cache_leftovers())
    add("nothing no role uses (docs, manuals, translations, unused MySQL programs)", left_out_leftovers())
    add(
        "package updates leave out what no role uses",
        [] if os.path.isfile(ctx.os.left_out_config) else ["no " + ctx.os.left_out_config],
    )
    add("logs cleaned", log_leftovers())
    add("no shell history", history_files())
    add("no temp files", tmp_leftovers())
    add("bundle removed", [ctx.bundle] if ctx.bundle and os.path.exists(ctx.bundle) else [])
    add("build directory removed", [p for p in (L.BUILD_DIR, L.BUILD_PACKAGES_RECORD) if os.path.exists(p)])
    secrets = [p for p in (L.SECRETS_ENV, L.ADMIN_PASSWORD_FILE, L.FIRSTBOOT_MARKER) if os.path.exists(p)]
    secrets += glob.glob(L.AIRFLOW_HOME + "/*.generated")
    if os.path.exists(L.AIRFLOW_CFG):
        secrets += ["%s %s" % (L.AIRFLOW_CFG, o) for o in airflow_cfg_secret_options(L.AIRFLOW_CFG)]
    add("no airflow secrets", secrets)
    add("no AWS credentials", aws_credential_paths())
    add("build sources removed (extra CA, mirror)", build_source_leftovers(ctx))
    add(
        "mysql server uuid removed",
        [p for p in [mysql_auto_cnf(ctx.facts.mysql_datadir)] if os.path.exists(p)],
    )
    add("no mysql binary logs", mysql_binary_logs(ctx.facts.mysql_datadir))
    add("mysql keys made per instance", mysql_generated_keys(ctx.facts.mysql_datadir))
    add("no stray airflow home", stray_airflow_homes())
    add("airflow logs empty", [p for p in glob.glob(L.AIRFLOW_HOME + "/logs/*")])
    add("no random seed", [p for p in ["/var/lib/systemd/random-seed"] if os.path.exists(p)])
    # The role comes from each instance's user data at its first boot, never from the build.
    add("no role decided", [p for p in (L.ROLE_DIR, L.ROLE_ENV, L.REDIS_CONF) if os.path.exists(p)])
    return results


# ------------------------------------------------------------------ cleanup steps
def stop_services(ctx):
    for unit in (L.AIRFLOW_TARGET, *L.SERVICE_UNITS, ctx.facts.mysql_unit, ctx.facts.redis_unit):
        systemd.stop(ctx, unit)


def remove_mysql_server_uuid(ctx):
    """MySQL writes a fresh auto.cnf (server_uuid) at its first start on each instance."""
    ctx.remove(mysql_auto_cnf(ctx.facts.mysql_datadir))


def remove_mysql_binary_logs(ctx):
    for path in mysql_binary_logs(ctx.facts.mysql_datadir):
        ctx.remove(path)


def remove_mysql_generated_keys(ctx):
    for path in mysql_generated_keys(ctx.facts.mysql_datadir):
        ctx.remove(path)


def remove_stray_airflow_homes(ctx):
    for path in stray_airflow_homes():
        ctx.remove(path)


def remove_airflow_secrets(ctx):
    generated = glob.glob(L.AIRFLOW_HOME + "/*.generated")
    for path in [L.SECRETS_ENV, L.ADMIN_PASSWORD_FILE, L.FIRSTBOOT_MARKER, *generated]:
        ctx.remove(path)


def clear_airflow_logs(ctx):
    for path in glob.glob(L.AIRFLOW_HOME + "/logs/*"):
        ctx.remove(path)


def remove_build_sources(ctx):
    """The extra CA, the mirror and the package manager's CA setting served the build only."""
    if ctx.settings["keep_build_sources"]:
        ctx.info("keep_build_sources: the build's CA, mirror and index stay in the image")
        return "skipped"
    if os.path.exists(ctx.facts.ca_anchor):
        ctx.remove(ctx.facts.ca_anchor)
        ctx.act("rebuild the OS trust store without the build's CA", ctx.os.update_trust_store, ctx)
    ctx.os.forget_build_sources(ctx)
    return None


def build_source_leftovers(ctx):
    if ctx.settings["keep_build_sources"]:
        return []
    found = [ctx.facts.ca_anchor] if os.path.exists(ctx.facts.ca_anchor) else []
    return found + ctx.os.build_source_leftovers(ctx)


def remove_build_directory(ctx):
    ctx.remove(L.BUILD_DIR)
    ctx.remove(L.BUILD_PACKAGES_RECORD)
    ctx.remove(L.STATE_DIR + "/index-refreshed")


def clean_package_caches(ctx):
    if package_cache_leftovers():
        ctx.act("clean %s caches" % ctx.os.name, ctx.os.clean_caches, ctx)


def unlink_all(paths):
    """Remove the files, then the directories they leave empty (the listed roots stay)."""
    for path in paths:
        os.unlink(path)
    for root in L.LEFT_OUT_DIRS:
        for parent, dirs, files in os.walk(root, topdown=False) if os.path.isdir(root) else ():
            if parent != root and not dirs and not files:
                os.rmdir(parent)


def leave_out_what_no_role_uses(ctx):
    """Docs, manuals, translations and MySQL's unused programs: removed, and left out of later
    package installs and updates (an image's size is paid at every launch and snapshot)."""
    ctx.os.leave_out(ctx, L.LEFT_OUT_PATHS, L.LEFT_OUT_KEPT)
    found = left_out_leftovers()
    if found:
        ctx.act(
            "remove %d files no role uses under %s" % (len(found), ", ".join(L.LEFT_OUT_DIRS)),
            unlink_all,
            found,
        )


def remove_ssh_host_keys(ctx):
    for path in glob.glob("/etc/ssh/ssh_host_*"):
        ctx.remove(path)


def remove_authorized_keys(ctx):
    for path in authorized_keys_files():
        ctx.remove(path)


def empty_machine_id(ctx):
    """Empty (not removed): systemd then makes a new id at the next boot."""
    if not os.path.exists("/etc/machine-id") or os.path.getsize("/etc/machine-id") > 0:
        ctx.act("empty /etc/machine-id", truncate, "/etc/machine-id", 0o444)
    dbus = "/var/lib/dbus/machine-id"
    if os.path.isfile(dbus) and not os.path.islink(dbus):
        ctx.remove(dbus)
    ctx.remove("/var/lib/systemd/random-seed")


def clean_cloud_init(ctx):
    if not os.path.exists("/usr/bin/cloud-init"):
        ctx.info("no cloud-init on this image")
        return "skipped"
    ctx.act("cloud-init clean --logs --seed", ctx.run, ["cloud-init", "clean", "--logs", "--seed"])
    return None


def remove_instance_state(ctx):
    for path in instance_state_leftovers():
        ctx.remove(path)


def reset_hostname(ctx):
    ctx.write_file(HOSTNAME_FILE, IMAGE_HOSTNAME, 0o644, "root", "root")


def remove_shell_history(ctx):
    for path in history_files():
        ctx.remove(path)


def remove_aws_credentials(ctx):
    for h in home_dirs():
        ctx.remove(os.path.join(h, ".aws"))


def truncate(path, mode=None):
    with open(path, "w"):
        pass
    if mode is not None:
        os.chmod(path, mode)


def vacuum_journal(ctx):
    # best effort, as journald may not be running; the archived files it leaves are removed
    subprocess.call(["journalctl", "--rotate"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.call(["journalctl", "--vacuum-time=1s"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for path in glob.glob("/var/log/journal/*/*@*"):
        ctx.remove(path)


def clean_logs(ctx):
    if glob.glob("/var/log/journal/*"):
        ctx.act("rotate and vacuum the journal", vacuum_journal, ctx)
    for root, _dirs, files in os.walk("/var/log"):
        if root.startswith("/var/log/journal"):
            continue
        for f in files:
            path = os.path.join(root, f)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            if ROTATED_LOG.search(f):
                ctx.remove(path)
            elif os.path.getsize(path) > 0:
                ctx.act("truncate %s" % path, truncate, path)


def remove_temp_files(ctx):
    for path in tmp_leftovers():
        if ctx.bundle and os.path.abspath(path) == os.path.abspath(ctx.bundle):
            continue  # removed last, by remove_bundle
        ctx.remove(path)


def remove_bundle(ctx):
    bundle = ctx.bundle
    if not bundle or not os.path.exists(bundle):
        return "skipped"
    if not os.path.exists(os.path.join(bundle, "settings.json")):
        ctx.info("%s does not look like a bundle: left alone" % bundle)
        return "skipped"
    ctx.remove(bundle)
    return None


def validate_image(ctx):
    results = checks(ctx)
    problems = [(name, found) for name, found in results if found]
    for name, found in results:
        if not found:
            ctx.info("ok    %s" % name)
    for name, found in problems:
        ctx.info(
            "FAIL  %s: %s"
            % (name, ", ".join(found[:8]) + (" (+%d more)" % (len(found) - 8) if len(found) > 8 else ""))
        )
    if problems:
        msg = "%d hygiene rule(s) broken: %s" % (len(problems), ", ".join(n for n, _ in problems))
        if ctx.dry_run:
            ctx.info("[dry-run] validate-image would fail: " + msg)
            return None
        raise StepFailed(msg)
    return None


CLEANUP_STEPS = [
    stop_services,
    remove_mysql_server_uuid,
    remove_mysql_binary_logs,
    remove_mysql_generated_keys,
    remove_airflow_secrets,
    remove_stray_airflow_homes,
    clear_airflow_logs,
    remove_build_sources,
    remove_build_directory,
    clean_package_caches,
    leave_out_what_no_role_uses,
    remove_ssh_host_keys,
    remove_authorized_keys,
    empty_machine_id,
    clean_cloud_init,
    remove_instance_state,
    reset_hostname,
    remove_shell_history,
    remove_aws_credentials,
    remove_temp_files,
    remove_bundle,
    clean_logs,
]
