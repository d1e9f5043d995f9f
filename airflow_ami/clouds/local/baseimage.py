"""The local cloud's base image: a Debian unstable rootfs built with mmdebstrap.

Cached under ``<cache>/base/<recipe hash>/rootfs``; any change to the recipe
(packages, the files we add, the host's CA bundle) gives a new hash and so a
new image. Only the newest few are kept.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from airflow_ami.clouds.local.system import LocalCloudError, log, pid_alive, run, safe_rmtree

HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
DEFAULT_USER = "admin"
KEEP_IMAGES = 2
CHROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Stands in for cloud-init: per-instance SSH host keys and the default user's
# key from the metadata service (IMDSv2), before sshd starts.
INIT_SCRIPT = r'''#!/usr/bin/python3
"""Local cloud instance init: SSH host keys, the default user's key from IMDSv2."""
import glob
import os
import pwd
import subprocess
import sys
import time
import urllib.error
import urllib.request

IMDS = "http://169.254.169.254/latest/"
STATE = "/var/lib/localcloud-init/instance-id"
USER = "@USER@"


def imds(path, token=None):
    if token is None:
        req = urllib.request.Request(IMDS + "api/token", method="PUT",
                                     headers={"X-aws-ec2-metadata-token-ttl-seconds": "300"})
    else:
        req = urllib.request.Request(IMDS + path, headers={"X-aws-ec2-metadata-token": token})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return resp.read().decode()


def get_token(attempts=30):
    for _ in range(attempts):
        try:
            return imds("api/token")
        except OSError as exc:
            print("IMDS not reachable yet:", exc, flush=True)
            time.sleep(1)
    return None


def previous_instance_id():
    try:
        with open(STATE) as f:
            return f.read().strip()
    except OSError:
        return ""


def install_key(key):
    user = pwd.getpwnam(USER)
    ssh_dir = os.path.join(user.pw_dir, ".ssh")
    os.makedirs(ssh_dir, mode=0o700, exist_ok=True)
    path = os.path.join(ssh_dir, "authorized_keys")
    lines = open(path).read().splitlines() if os.path.exists(path) else []
    if key not in lines:
        with open(path, "a") as f:
            f.write(key + "\n")
    for p in (ssh_dir, path):
        os.chown(p, user.pw_uid, user.pw_gid)
    os.chmod(path, 0o600)


def main():
    token = get_token()
    instance_id = imds("meta-data/instance-id", token) if token else ""
    if instance_id and instance_id != previous_instance_id():
        # A new instance (first boot of an image) gets host keys of its own.
        for path in glob.glob("/etc/ssh/ssh_host_*"):
            os.remove(path)
    subprocess.run(["ssh-keygen", "-A"], check=True)
    if not token:
        sys.exit("no metadata service at 169.254.169.254: no SSH key installed for " + USER)
    try:
        install_key(imds("meta-data/public-keys/0/openssh-key", token).strip())
    except urllib.error.HTTPError as exc:
        print("no public key in the metadata:", exc, flush=True)
    os.makedirs(os.path.dirname(STATE), exist_ok=True)
    with open(STATE, "w") as f:
        f.write(instance_id + "\n")


main()
'''

INIT_UNIT = """[Unit]
Description=Local cloud instance init (SSH host keys, default user's key from IMDS)
After=local-fs.target
Before=ssh.service ssh.socket sshd.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/localcloud-init

[Install]
WantedBy=multi-user.target
"""

# The mirror's sid Release file is stale here; instances run apt too.
APT_CONF = 'Acquire::Check-Valid-Until "false";\n'


@dataclass(frozen=True)
class Recipe:
    suite: str = "sid"
    mirror: str = ""  # empty: mmdebstrap's default Debian mirror
    variant: str = "apt"
    packages: tuple[str, ...] = (
        "systemd",
        "systemd-sysv",
        "dbus",
        "libpam-systemd",
        "openssh-server",
        "openssh-client",
        "python3",
        "sudo",
        "ca-certificates",
        "iproute2",
        "curl",
        "gnupg",
        "procps",
        "passwd",
        "mount",
        "util-linux",
        "netbase",
    )
    user: str = DEFAULT_USER
    files: dict[str, str] = field(
        default_factory=lambda: {
            "usr/local/sbin/localcloud-init": INIT_SCRIPT.replace("@USER@", DEFAULT_USER),
            "etc/systemd/system/localcloud-init.service": INIT_UNIT,
            "etc/apt/apt.conf.d/99localcloud-no-valid-until": APT_CONF,
            f"etc/sudoers.d/90-{DEFAULT_USER}": f"{DEFAULT_USER} ALL=(ALL) NOPASSWD:ALL\n",
        }
    )


def recipe_hash(recipe: Recipe, ca_bundle: Path = HOST_CA_BUNDLE) -> str:
    digest = hashlib.sha256(json.dumps(asdict(recipe), sort_keys=True).encode())
    if ca_bundle.exists():
        digest.update(ca_bundle.read_bytes())
    return digest.hexdigest()[:12]


def base_dir(cache: Path) -> Path:
    return cache / "base"


def mmdebstrap_command(recipe: Recipe, target: Path) -> list[str]:
    return [
        "mmdebstrap",
        f"--variant={recipe.variant}",
        f"--include={','.join(recipe.packages)}",
        '--aptopt=Acquire::Check-Valid-Until "false"',
        "--mode=root",
        "--format=directory",
        recipe.suite,
        str(target),
        *([recipe.mirror] if recipe.mirror else []),
    ]


def customize_rootfs(root: Path, recipe: Recipe, ca_bundle: Path = HOST_CA_BUNDLE) -> None:
    """Turn the bootstrapped tree into a cloud-like image (user, init unit, trust)."""
    for rel, text in recipe.files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (root / "usr/local/sbin/localcloud-init").chmod(0o755)
    (root / f"etc/sudoers.d/90-{recipe.user}").chmod(0o440)
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / "localcloud-init.service"
    if not link.is_symlink():
        link.symlink_to("/etc/systemd/system/localcloud-init.service")
    # Behind an intercepting proxy, instances must trust what the host trusts.
    if ca_bundle.exists():
        shutil.copyfile(ca_bundle, root / "usr/local/share/ca-certificates/localcloud-host.crt")
    in_chroot(root, "update-ca-certificates")
    in_chroot(root, "useradd", "--create-home", "--shell", "/bin/bash", "--groups", "sudo", recipe.user)
    # "*" (no password, not locked) keeps key-only SSH logins working.
    in_chroot(root, "usermod", "--password", "*", recipe.user)
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    # Empty machine-id: each instance's first boot makes its own.
    (root / "etc/machine-id").write_text("")
    dbus_id = root / "var/lib/dbus/machine-id"
    if dbus_id.exists() and not dbus_id.is_symlink():
        dbus_id.unlink()


def in_chroot(root: Path, *cmd: str) -> None:
    # The caller's PATH may lack the sbin directories the image's tools live in.
    env = {"PATH": CHROOT_PATH, "LC_ALL": "C.UTF-8"}
    run(["chroot", str(root), *cmd], env=env, timeout=300)


def ensure_base_image(cache: Path, recipe: Recipe | None = None, keep: int = KEEP_IMAGES) -> tuple[str, Path]:
    """The cached rootfs for the recipe, built when missing; returns (hash, rootfs)."""
    recipe = recipe or Recipe()
    digest = recipe_hash(recipe)
    final = base_dir(cache) / digest
    if (final / "rootfs").is_dir():
        os.utime(final)  # newest-used survives pruning
        return digest, final / "rootfs"
    remove_stale_builds(cache)
    work = base_dir(cache) / f".build-{digest}-{os.getpid()}"
    work.mkdir(parents=True)
    started = time.monotonic()
    log.info("building base image %s with mmdebstrap (Debian %s)", digest, recipe.suite)
    try:
        proc = run(mmdebstrap_command(recipe, work / "rootfs"), check=False, timeout=1800)
        (work / "mmdebstrap.log").write_text((proc.stdout or "") + (proc.stderr or ""))
        if proc.returncode != 0:
            raise LocalCloudError(
                f"mmdebstrap failed (status {proc.returncode}); see {work}/mmdebstrap.log "
                f"(is {recipe.mirror or 'the Debian mirror'} reachable?)"
            )
        customize_rootfs(work / "rootfs", recipe)
        (work / "recipe.json").write_text(json.dumps(asdict(recipe), indent=2) + "\n")
        work.rename(final)
    except BaseException:
        safe_rmtree(work)
        raise
    log.info("base image %s built in %.0fs", digest, time.monotonic() - started)
    prune_images(base_dir(cache), keep)
    return digest, final / "rootfs"


def remove_stale_builds(cache: Path) -> None:
    """Drop half-built images of killed runs (their builder pid is gone)."""
    for work in base_dir(cache).glob(".build-*"):
        pid = int(work.name.rsplit("-", 1)[-1])
        if not pid_alive(pid):
            safe_rmtree(work)


def prune_images(parent: Path, keep: int) -> list[Path]:
    """Keep the `keep` most recently used image dirs under parent; return the removed."""
    images = sorted(
        (p for p in parent.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for old in images[keep:]:
        log.info("pruning cached image %s", old)
        safe_rmtree(old)
    return images[keep:]


def base_ami_name(digest: str, recipe: Recipe | None = None) -> str:
    return f"airflow-ami-base-debian-{(recipe or Recipe()).suite}-{digest}"
