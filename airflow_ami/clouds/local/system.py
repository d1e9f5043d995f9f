"""Host plumbing shared by the local cloud: names, paths, commands, root check."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

log = logging.getLogger("airflow_ami.clouds.local")

# Every host object we create (netns, veth, nft table, machine, process marker)
# carries this prefix so the reaper can find leftovers of a killed run.
PREFIX = "aa-"
# nft identifiers cannot contain "-".
NFT_PREFIX = "aa_"
# Set in the environment of every process we start (and nothing else), so the
# reaper can tell our moto/IMDS/nspawn processes from anyone else's.
MARKER_ENV = "AIRFLOW_AMI_LOCALCLOUD"

CACHE_DIR_ENV = "AIRFLOW_AMI_CACHE_DIR"
DEFAULT_CACHE_DIR = Path("/var/cache/airflow-ami")


class LocalCloudError(RuntimeError):
    """A failure of the local cloud, worded for the person running it."""


def require_root() -> None:
    if os.geteuid() != 0:
        raise LocalCloudError(
            "the local cloud needs root (network namespaces, nftables, systemd-nspawn): "
            "run it again as root, e.g. `sudo ./bake ...`"
        )


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_DIR_ENV) or DEFAULT_CACHE_DIR)


def marked_env(extra: Mapping[str, str] | None = None, tag: str = "1") -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra or {})
    env[MARKER_ENV] = tag
    return env


def run(
    cmd: Sequence[str],
    *,
    check: bool = True,
    capture: bool = True,
    env: Mapping[str, str] | None = None,
    timeout: float | None = 120,
) -> subprocess.CompletedProcess[str]:
    """Run a host command; on failure raise with its stderr so the cause is visible."""
    log.debug("run: %s", " ".join(cmd))
    proc = subprocess.run(
        list(cmd),
        check=False,
        text=True,
        capture_output=capture,
        env=dict(env) if env is not None else None,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout or "").strip().splitlines()
        tail = detail[-1] if detail else f"exit status {proc.returncode}"
        raise LocalCloudError(f"`{' '.join(cmd)}` failed: {tail}")
    return proc


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still "exists" for kill(0); treat it as gone.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def stop_process(pid: int, timeout: float = 10, sig: int = signal.SIGTERM) -> None:
    """Signal the process group, wait, then SIGKILL: it is gone when this returns."""
    if not pid_alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)
    if _wait_gone(pid, timeout):
        return
    log.warning("pid %d ignored signal %d for %.0fs; killing it", pid, sig, timeout)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    _wait_gone(pid, 10)


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # Our own children linger as zombies until waited for.
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        if not pid_alive(pid):
            return True
        time.sleep(0.1)
    return False


def mounts_under(path: Path) -> list[Path]:
    """Mount points at or below path, deepest first (the order to unmount them)."""
    root = str(path.resolve())
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == root or point.startswith(root + "/"):
            found.append(Path(point))
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def safe_rmtree(path: Path) -> None:
    """rmtree that first unmounts whatever a killed tool left mounted inside.

    Without it, deleting a tree with a leftover bind mount of /dev or /proc
    would delete the host's files through it.
    """
    if not path.exists():
        return
    for point in mounts_under(path):
        run(["umount", "--lazy", str(point)], check=False)
    if mounts_under(path):
        raise LocalCloudError(f"cannot unmount everything under {path}; check `findmnt -R {path}`")
    shutil.rmtree(path, ignore_errors=True)


# Host tools the local cloud drives, and the Debian package that brings each.
REQUIRED_TOOLS = {
    "systemd-nspawn": "systemd-container",
    "mmdebstrap": "mmdebstrap",
    "nft": "nftables",
    "ip": "iproute2",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "chroot": "coreutils",
}


def missing_tools() -> list[str]:
    """Debian packages to install for the tools that are not on PATH (or in sbin)."""
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    return sorted({pkg for tool, pkg in REQUIRED_TOOLS.items() if not shutil.which(tool, path=search)})


def require_tools() -> None:
    missing = missing_tools()
    if missing:
        raise LocalCloudError(
            f"the local cloud needs these packages: {' '.join(missing)} "
            f"(`./bake` installs them; or apt-get install {' '.join(missing)})"
        )
