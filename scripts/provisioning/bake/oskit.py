"""OS adapters: one small class per package manager.  Steps above them are OS-agnostic.

Each adapter knows how to do things on its OS: package commands, which packages
build ``mysqlclient``, how to rebuild the trust store, how to use a mirror.  Where
things are (the MySQL unit, socket, data directory and drop-in, the CA paths) is
not the adapter's to say: those are the profile's ``os_facts``, read as
:class:`~provisioning.shared.contract.OsFacts` from settings.json.
"""

import os
import re

from ..shared import layout as L
from ..shared.inifile import get_option, remove_option, set_options
from ..shared.runner import StepFailed, log
from .netfetch import fetch_bytes
from .osdetect import UnsupportedOS, detect_profile, is_debian_unstable, parse_os_release
from .pgpkey import PUBLIC_KEY, PgpError, fingerprints, normalize

# Oracle's MySQL repository setup packages, by MySQL series and EL release.
MYSQL_REPO_RPMS = {
    ("8.4", "el9"): "https://repo.mysql.com/mysql84-community-release-el9-1.noarch.rpm",
    ("8.4", "el7"): "https://repo.mysql.com/mysql84-community-release-el7-1.noarch.rpm",
}
MYSQL_APT_SUITES = {"8.4": "mysql-8.4-lts"}
# Signs both the release RPMs and the apt repository; trusted only if its primary key
# has the fingerprint pinned in settings (mysql_signing_key_fingerprint).
MYSQL_SIGNING_KEY_URL = "https://repo.mysql.com/RPM-GPG-KEY-mysql-2023"


def fetch_mysql_signing_key(ctx):
    """Oracle's MySQL signing key and its v4 fingerprints (primary first, then subkeys),
    refused unless it is exactly one primary key with the pinned fingerprint."""
    pinned = normalize(ctx.settings["mysql_signing_key_fingerprint"])
    key = fetch_bytes(MYSQL_SIGNING_KEY_URL)
    try:
        found = fingerprints(key)
    except PgpError as exc:
        raise StepFailed(
            "%s is not an OpenPGP public key (%s): Oracle's MySQL repository is not trusted"
            % (MYSQL_SIGNING_KEY_URL, exc)
        ) from exc
    primaries = [fpr for tag, fpr in found if tag == PUBLIC_KEY]
    if primaries != [pinned]:
        raise StepFailed(
            "%s holds key %s, expected %s (mysql_signing_key_fingerprint): Oracle's MySQL "
            "repository is not trusted" % (MYSQL_SIGNING_KEY_URL, ", ".join(primaries) or "none", pinned)
        )
    return key, [fpr for _, fpr in found]


def rpm_signed_by(rc, output, key_fingerprints):
    """Does ``rpm -Kv`` output say the package's signatures are good and all made by one
    of these keys?  rpm -K alone also passes an unsigned package (digests OK)."""
    if rc != 0 or re.search(r"NOKEY|NOTTRUSTED|BAD|NOT OK", output):
        return False
    key_ids = {fpr[-8:].lower() for fpr in key_fingerprints}
    signers = re.findall(r"Signature, key ID ([0-9a-fA-F]+): OK", output)
    return bool(signers) and all(signer.lower() in key_ids for signer in signers)


class Adapter(object):
    name = ""
    # what `python3 -m venv` (with pip) needs beyond python3 itself
    venv_packages = ()

    def __init__(self, os_release):
        self.os_release = os_release

    # trust store
    def update_trust_store(self, ctx):
        ctx.run(["update-ca-trust", "extract"])

    # package state (read-only probes are allowed in dry-run)
    def missing(self, ctx, packages):
        return [p for p in packages if not self.is_installed(ctx, p)]

    def is_installed(self, ctx, package):
        rc, _ = ctx.probe(["rpm", "-q", "--whatprovides", package])
        return rc == 0

    def install(self, ctx, packages):
        raise NotImplementedError

    def install_redis(self, ctx, package):
        self.install(ctx, [package])

    def owner_of(self, ctx, path):
        rc, out = ctx.probe(["rpm", "-qf", "--qf", "%{NAME}\n", path])
        return out.strip().splitlines()[0] if rc == 0 and out.strip() else None


class _RpmAdapter(Adapter):
    tool = "dnf"
    el = "el9"
    left_out_config = L.RPM_LEFT_OUT_CONFIG

    def leave_out(self, ctx, paths, kept):
        """rpm installs nothing under a "netshared" path (a prefix); licenses live apart, in
        /usr/share/licenses, so `kept` (Debian's copyright files) has nothing to keep here."""
        ctx.write_file(self.left_out_config, "%%_netsharedpath %s\n" % ":".join(paths))

    def _cmd(self, *args):
        return [self.tool, "-y", "-q", *list(args)]

    def configure_package_manager_ca(self, ctx, bundle_path):
        return _set_ini_main(ctx, self.main_conf, "sslcacert", bundle_path)

    @property
    def main_conf(self):
        return "/etc/dnf/dnf.conf" if self.tool == "dnf" else "/etc/yum.conf"

    def forget_build_sources(self, ctx):
        # the mirror was only ever given per call (--setopt): just the CA option to drop
        if self.build_source_leftovers(ctx):
            with open(self.main_conf) as fh:
                ctx.write_file(self.main_conf, remove_option(fh.read(), "main", "sslcacert"))

    def build_source_leftovers(self, ctx):
        if not os.path.isfile(self.main_conf):
            return []
        with open(self.main_conf) as fh:
            found = get_option(fh.read(), "main", "sslcacert")
        return ["%s sslcacert=%s" % (self.main_conf, found)] if found else []

    def configure_mirror(self, ctx, mirror):
        # Repo files stay untouched: every yum/dnf call gets --setopt baseurl overrides.
        ctx.info("os_mirror %s applied to every %s call (baseurl override)" % (mirror, self.tool))
        return False

    def mirror_args(self, ctx):
        mirror = ctx.settings["os_mirror"]
        if not mirror:
            return []
        return [
            "--setopt=*.baseurl=%s/$releasever/$basearch" % mirror.rstrip("/"),
            "--setopt=*.mirrorlist=",
            "--setopt=*.metalink=",
        ]

    def refresh(self, ctx):
        ctx.run(self._cmd(*([*self.mirror_args(ctx), "makecache"])))

    def install(self, ctx, packages):
        ctx.run(self._cmd(*([*self.mirror_args(ctx), "install", *list(packages)])))

    def install_mysql_server(self, ctx, version):
        rpm = MYSQL_REPO_RPMS.get((version, self.el))
        if rpm is None:
            raise StepFailed("no Oracle MySQL repository known for MySQL %s on %s" % (version, self.el))
        if not self.is_installed(ctx, "mysql-community-server"):
            if not self.is_installed(ctx, "mysql%s-community-release" % version.replace(".", "")):
                ctx.act(
                    "install Oracle's MySQL %s repository (%s), signed by the pinned key" % (version, rpm),
                    self._install_oracle_repo,
                    ctx,
                    rpm,
                )
            ctx.act("install mysql-community-server", self.install, ctx, ["mysql-community-server"])

    def _install_oracle_repo(self, ctx, url):
        key, key_fingerprints = fetch_mysql_signing_key(ctx)
        key_file = os.path.join(L.BUILD_DIR, os.path.basename(MYSQL_SIGNING_KEY_URL))
        ctx.write_file(key_file, key)
        ctx.run(["rpm", "--import", key_file])
        package = os.path.join(L.BUILD_DIR, os.path.basename(url))
        ctx.write_file(package, fetch_bytes(url))
        rc, out = ctx.run(["rpm", "-Kv", package], check=False)
        if not rpm_signed_by(rc, out, key_fingerprints):
            raise StepFailed(
                "%s is not signed by Oracle's pinned MySQL key (rpm -K):\n%s"
                % (os.path.basename(url), out.strip())
            )
        ctx.run(self._cmd("install", package))

    def build_packages(self, ctx, system_python):
        pkgs = ["gcc", "mysql-community-devel", "pkgconfig" if self.tool == "yum" else "pkgconf-pkg-config"]
        if system_python:
            pkgs.append("python3-devel")
        return pkgs

    def keep_package(self, ctx, package):
        if self.tool == "dnf":
            ctx.run(["dnf", "-y", "-q", "mark", "install", package])

    def remove_packages(self, ctx, packages):
        ctx.run(self._cmd("remove", *packages))

    def clean_caches(self, ctx):
        ctx.run([self.tool, "clean", "all"], check=False)
        for d in ("/var/cache/dnf", "/var/cache/yum"):
            if os.path.isdir(d):
                for entry in os.listdir(d):
                    ctx.remove(os.path.join(d, entry))


class Dnf(_RpmAdapter):
    """Amazon Linux 2023."""

    name = "dnf"
    tool = "dnf"
    el = "el9"


class Yum(_RpmAdapter):
    """Amazon Linux 2: Python >= 3.11 comes from uv, MySQL from Oracle's el7
    repository; only Redis needs an amazon-linux-extras topic."""

    name = "yum"
    tool = "yum"
    el = "el7"

    def install_redis(self, ctx, package):
        ctx.run(["amazon-linux-extras", "install", "-y", "redis6"])


class Apt(Adapter):
    name = "apt"
    venv_packages = ("python3-venv",)
    env = (("DEBIAN_FRONTEND", "noninteractive"), ("NEEDRESTART_MODE", "a"))

    def _opts(self):
        opts = ["-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold"]
        if is_debian_unstable(self.os_release):
            # sid/testing mirrors may serve a Release file past its Valid-Until
            opts += ["-o", "Acquire::Check-Valid-Until=false"]
        return opts

    left_out_config = L.DPKG_LEFT_OUT_CONFIG

    def update_trust_store(self, ctx):
        ctx.run(["update-ca-certificates"])

    def leave_out(self, ctx, paths, kept):
        """dpkg's path-exclude: what a later install or upgrade would put back (a directory's
        contents, a file), with `kept` included again."""
        lines = ["path-exclude=%s" % (p + "/*" if p in L.LEFT_OUT_DIRS else p) for p in paths]
        ctx.write_file(self.left_out_config, "\n".join(lines + ["path-include=" + k for k in kept]) + "\n")

    def configure_package_manager_ca(self, ctx, bundle_path):
        return ctx.write_file(APT_CA_CONF, 'Acquire::https::CaInfo "%s";\n' % bundle_path)

    def configure_mirror(self, ctx, mirror):
        mirror = mirror.rstrip("/")
        changed = False
        for path in APT_SOURCES:
            if not os.path.isfile(path):
                continue
            with open(path) as fh:
                text = fh.read()
            new = re.sub(r"https?://deb\.debian\.org/debian(?=[\s/])", lambda _: mirror, text)
            if new != text:
                # the original goes back in place at cleanup (forget_build_sources)
                ctx.write_file(_sources_backup(path), text, 0o600)
                changed = ctx.write_file(path, new) or changed
        return changed

    def forget_build_sources(self, ctx):
        ctx.remove(APT_CA_CONF)
        for path in APT_SOURCES:
            if os.path.isfile(_sources_backup(path)):
                with open(_sources_backup(path), "rb") as fh:
                    ctx.write_file(path, fh.read(), 0o644)

    def build_source_leftovers(self, ctx):
        found = [APT_CA_CONF] if os.path.exists(APT_CA_CONF) else []
        mirror = ctx.settings["os_mirror"]
        for path in APT_SOURCES if mirror else ():
            if os.path.isfile(path):
                with open(path) as fh:
                    if mirror.rstrip("/") in fh.read():
                        found.append("%s names %s" % (path, mirror))
        return found

    def is_installed(self, ctx, package):
        rc, out = ctx.probe(["dpkg-query", "-W", "-f", "${Status}", package])
        return rc == 0 and "install ok installed" in out

    def has_candidate(self, ctx, package):
        rc, out = ctx.probe(["apt-cache", "policy", package])
        m = re.search(r"Candidate:\s*(\S+)", out)
        return rc == 0 and m is not None and m.group(1) != "(none)"

    def refresh(self, ctx):
        ctx.run(["apt-get", "-q", "update", *self._opts()], env=dict(self.env))

    def install(self, ctx, packages):
        ctx.run(
            ["apt-get", "-q", "-y", "install", "--no-install-recommends", *self._opts(), *packages],
            env=dict(self.env),
        )

    def install_mysql_server(self, ctx, version):
        if self.is_installed(ctx, "mysql-server") or self.is_installed(ctx, "mysql-community-server"):
            return
        if not self.has_candidate(ctx, "mysql-server"):
            self._add_oracle_repo(ctx, version)
        ctx.act("install mysql-server", self.install, ctx, ["mysql-server"])

    def _add_oracle_repo(self, ctx, version):
        suite = MYSQL_APT_SUITES.get(version)
        codename = self.os_release.get("VERSION_CODENAME", "")
        if suite is None or not codename:
            raise StepFailed(
                "this Debian ships no mysql-server and no Oracle repository is "
                "known for MySQL %s on %r" % (version, codename)
            )
        ctx.act(
            "add Oracle's MySQL apt repository %s %s" % (codename, suite),
            self._write_oracle_repo,
            ctx,
            codename,
            suite,
        )

    def _write_oracle_repo(self, ctx, codename, suite):
        key, _ = fetch_mysql_signing_key(ctx)
        ctx.write_file("/usr/share/keyrings/mysql-oracle.asc", key)
        ctx.write_file(
            "/etc/apt/sources.list.d/mysql-oracle.list",
            "deb [signed-by=/usr/share/keyrings/mysql-oracle.asc] http://repo.mysql.com/apt/"
            "debian %s %s\n" % (codename, suite),
        )
        self.refresh(ctx)

    def build_packages(self, ctx, system_python):
        # sid: default-libmysqlclient-dev is uninstallable, libmysqlclient-dev works
        dev = (
            "libmysqlclient-dev"
            if self.has_candidate(ctx, "libmysqlclient-dev")
            else "default-libmysqlclient-dev"
        )
        pkgs = ["gcc", "libc6-dev", "pkg-config", dev]
        if system_python:
            pkgs.append("python3-dev")
        return pkgs

    def owner_of(self, ctx, path):
        rc, out = ctx.probe(["dpkg-query", "-S", path])
        if rc != 0 or ":" not in out:
            real = os.path.realpath(path)
            if real == path:
                return None
            rc, out = ctx.probe(["dpkg-query", "-S", real])
            if rc != 0 or ":" not in out:
                return None
        return out.split(":", 1)[0].strip()

    def keep_package(self, ctx, package):
        ctx.run(["apt-mark", "manual", package])

    def remove_packages(self, ctx, packages):
        ctx.run(["apt-get", "-q", "-y", "purge", *self._opts(), *list(packages)], env=dict(self.env))
        ctx.run(["apt-get", "-q", "-y", "autoremove", "--purge", *self._opts()], env=dict(self.env))

    def clean_caches(self, ctx):
        ctx.run(["apt-get", "clean"], check=False)
        lists = "/var/lib/apt/lists"
        for entry in sorted(os.listdir(lists)) if os.path.isdir(lists) else []:
            if entry not in ("lock", "partial", "auxfiles"):
                ctx.remove(os.path.join(lists, entry))


APT_CA_CONF = "/etc/apt/apt.conf.d/80airflow-ami-ca"
APT_SOURCES = ("/etc/apt/sources.list", "/etc/apt/sources.list.d/debian.sources")


def _sources_backup(path):
    return os.path.join(L.SOURCES_BACKUP_DIR, path.strip("/").replace("/", "_"))


def _set_ini_main(ctx, path, key, value):
    text = ""
    if os.path.isfile(path):
        with open(path) as fh:
            text = fh.read()
    return ctx.write_file(path, set_options(text, "main", {key: value}))


ADAPTERS = {cls.name: cls for cls in (Yum, Dnf, Apt)}


def adapter_named(package_manager, os_release_text=""):
    """The adapter of a package manager (an OS profile's os_facts.package_manager)."""
    return ADAPTERS[package_manager](parse_os_release(os_release_text))


def adapter_on_this_host(os_name, facts, os_release_text, dry_run):
    """The adapter of the package manager the settings' OS profile names, once this host is
    shown to run that OS; a dry run only describes, so it may run on another (a warning)."""
    try:
        found = detect_profile(parse_os_release(os_release_text))
        problem = None if found == os_name else "settings are for %s but this host runs %s" % (os_name, found)
    except UnsupportedOS as exc:
        problem = str(exc)
    if problem and not dry_run:
        raise UnsupportedOS(problem)
    if problem:
        log("warning: %s; dry run continues with the %s adapter" % (problem, facts.package_manager))
    return adapter_named(facts.package_manager, os_release_text)
