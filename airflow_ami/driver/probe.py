"""Instance-side probe of the testinfra suite: runs ON the instance, as root.

The suite uploads this file, with the image's layout.py beside it, to
``/run/airflow-ami-testinfra/<digest>/`` (root-only tmpfs, gone after a reboot,
removed at the end of the session) and calls it with a sub-command; every
sub-command prints one JSON document on stdout.

Constraints: standard library only and Python >= 3.7 syntax, because the
instance's own ``python3`` may be Amazon Linux 2's 3.7. It never prints a
secret value: secrets are read here, on the instance, and only the names of
the keys and the places where they leak are reported.

Sub-commands:
  api METHOD PATH [JSON_BODY] [--no-auth]   one REST call (admin JWT unless --no-auth)
  token-check                                POST /auth/token with the admin's credentials
  wait-health TIMEOUT                        poll the health endpoint until healthy
  wait-dag DAG_ID TIMEOUT                    poll GET /api/v2/dags/DAG_ID until it exists
  wait-run DAG_ID RUN_ID TIMEOUT             poll a DAG run until it finishes, list its TIs
  listeners                                  TCP/UDP listening sockets with owning unit
  leaks                                      scan files, journal and process args for secrets
  firstboot-journal                          boots in which airflow-firstboot.service ran
  boot-token                                 identity of the current boot
  tls-check                                  api_tls self-signed: verify the API's certificate
  memory SECONDS UNIT...                     resident memory of the units' processes (the
                                             largest total seen, sampled for SECONDS)
  boot-phases UNIT...                        when PID 1 started (wall clock), and each unit's
                                             start and end of start-up, seconds after it
  api-calls SINCE                            execution API requests the API server logged since
                                             SINCE (unix seconds), from its access log
  cpu-seconds UNIT...                        CPU time each unit's cgroup (a slice: all below it)
                                             has used since it started (cgroup v2 cpu.stat)
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import stat
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

# The image's shared declarations are uploaded beside this file, as they are on the image.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from provisioning.shared import contract, layout

SECRETS_ENV = layout.SECRETS_ENV
ADMIN_PASSWORD = layout.ADMIN_PASSWORD_FILE
HEALTH_PATH = layout.HEALTH_PATH
HEALTH_COMPONENTS = layout.HEALTH_COMPONENTS
FIRSTBOOT_UNIT = layout.FIRSTBOOT_UNIT
FIRSTBOOT_MARKER = layout.FIRSTBOOT_MARKER
# How a boot's output from airflow-firstboot.service reads when it did the work
# (its steps log their names) or found the work done (it runs at every boot).
FIRSTBOOT_RAN = ("==> generate_secrets", "==> write_secrets_env")
FIRSTBOOT_SKIPPED = ("first boot already done",)
LEAK_SCAN_ROOTS = ("/etc", layout.AIRFLOW_HOME, layout.STATE_DIR, layout.CODE_DIR, "/usr/local/bin")
LEAK_SCAN_MAX_FILE = 64 * 1024 * 1024
MIN_SECRET_LEN = 8
# How often a wait asks the API again: one loopback request, so often enough that a wait ends
# within a second of what it waits for (the suite waits on hundreds of runs).
POLL_SECONDS = 1


def emit(doc):
    sys.stdout.write(json.dumps(doc, sort_keys=True, default=str))
    sys.stdout.write("\n")


def load_settings():
    return contract.read_settings(layout.BAKED_SETTINGS)


def base_url():
    # Where the instance itself reaches its API.
    return load_settings()["api_url"]


def http(method, path, body=None, token=None, timeout=30.0):
    """Return (status, parsed JSON or text, error string)."""
    data = None
    headers = {"Accept": "application/json"}
    if body is not None:
        data = json.dumps(body).encode("utf-8")
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = "Bearer " + token
    url = base_url() + path
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    # api_tls self-signed: verify against the instance's own certificate, as its tasks do.
    context = ssl.create_default_context(cafile=layout.API_TLS_CERT) if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except OSError as exc:  # URLError, socket.timeout and refused connections
        return 0, None, f"{type(exc).__name__}: {exc}"
    text = raw.decode("utf-8", "replace")
    try:
        return status, json.loads(text) if text else None, ""
    except ValueError:
        return status, text[:2000], ""


def admin_token():
    settings = load_settings()
    with open(ADMIN_PASSWORD) as fh:
        password = fh.read().strip()
    status, doc, err = http(
        "POST",
        "/auth/token",
        {"username": settings["admin_username"], "password": password},
    )
    if status not in (200, 201) or not isinstance(doc, dict) or "access_token" not in doc:
        raise SystemExit(
            json.dumps(
                {
                    "error": "POST /auth/token with the admin's credentials failed",
                    "status": status,
                    "detail": err or (doc if not isinstance(doc, dict) else doc.get("detail")),
                }
            )
        )
    return doc["access_token"]


def cmd_api(args):
    no_auth = "--no-auth" in args
    args = [a for a in args if a != "--no-auth"]
    method, path = args[0], args[1]
    body = json.loads(args[2]) if len(args) > 2 else None
    token = None if no_auth else admin_token()
    status, doc, err = http(method, path, body, token)
    emit({"status": status, "body": doc, "error": err})


def cmd_token_check(_args):
    settings = load_settings()
    with open(ADMIN_PASSWORD) as fh:
        password = fh.read().strip()
    user = settings["admin_username"]
    status, doc, err = http("POST", "/auth/token", {"username": user, "password": password})
    token = doc.get("access_token") if isinstance(doc, dict) else None
    bad_status, _bad, _ = http("POST", "/auth/token", {"username": user, "password": password + "-wrong"})
    authed_status = 0
    if token:
        authed_status, _d, _e = http("GET", "/api/v2/dags?limit=1", token=token)
    emit(
        {
            "status": status,
            "has_token": bool(token),
            "token_is_jwt": bool(token) and token.count(".") == 2,
            "wrong_password_status": bad_status,
            "authed_get_status": authed_status,
            "error": err,
        }
    )


def health_state():
    status, doc, err = http("GET", HEALTH_PATH, timeout=10.0)
    comps = {}
    if isinstance(doc, dict):
        for name, val in doc.items():
            if isinstance(val, dict):
                comps[name] = val.get("status")
    ok = status == 200 and all(comps.get(c) == "healthy" for c in HEALTH_COMPONENTS)
    return ok, {"http_status": status, "components": comps, "error": err}


def cmd_wait_health(args):
    timeout = float(args[0])
    start = time.time()
    ok, state = health_state()
    while not ok and time.time() - start < timeout:
        time.sleep(POLL_SECONDS)
        ok, state = health_state()
    state["healthy"] = ok
    state["waited"] = round(time.time() - start, 1)
    emit(state)


def cmd_wait_dag(args):
    dag_id, timeout = args[0], float(args[1])
    token = admin_token()
    start = time.time()
    status, doc, err = http("GET", "/api/v2/dags/" + dag_id, token=token)
    while status != 200 and time.time() - start < timeout:
        time.sleep(POLL_SECONDS)
        status, doc, err = http("GET", "/api/v2/dags/" + dag_id, token=token)
    emit({"status": status, "body": doc, "error": err, "waited": round(time.time() - start, 1)})


def cmd_wait_run(args):
    dag_id, run_id, timeout = args[0], args[1], float(args[2])
    token = admin_token()
    path = f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}"
    start = time.time()
    state, run = None, None
    while True:
        status, doc, err = http("GET", path, token=token)
        if status == 401:  # token expired during a long wait
            token = admin_token()
            continue
        if status == 200 and isinstance(doc, dict):
            run = doc
            state = doc.get("state")
            if state in ("success", "failed"):
                break
        if time.time() - start > timeout:
            break
        time.sleep(POLL_SECONDS)
    tis_status, tis, err = http("GET", path + "/taskInstances?limit=1000", token=token)
    emit(
        {
            "state": state,
            "run": run,
            "task_instances": (tis or {}).get("task_instances") if isinstance(tis, dict) else tis,
            "ti_status": tis_status,
            "error": err,
            "waited": round(time.time() - start, 1),
        }
    )


# --- listeners ---------------------------------------------------------------

TCP_LISTEN = "0A"
UDP_UNCONN = "07"


def decode_addr(hexaddr, family):
    if family == 4:
        return socket.inet_ntop(socket.AF_INET, struct.pack("<I", int(hexaddr, 16)))
    words = [int(hexaddr[i : i + 8], 16) for i in range(0, 32, 8)]
    return socket.inet_ntop(socket.AF_INET6, struct.pack("<4I", *words))


def socket_owners():
    """inode -> list of pids holding it."""
    owners = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(os.path.join(fd_dir, fd))
            except OSError:
                continue
            if target.startswith("socket:["):
                owners.setdefault(target[8:-1], set()).add(int(pid))
    return owners


def pid_unit(pid):
    try:
        with open(f"/proc/{pid}/cgroup") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return ""
    path = ""
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) == 3 and (parts[0] == "0" or parts[1] == "name=systemd"):
            path = parts[2]
            if parts[0] == "0":
                break
    for comp in reversed(path.split("/")):
        if comp.endswith((".service", ".scope", ".socket")):
            return comp
    return path


def pid_comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def cmd_listeners(_args):
    owners = socket_owners()
    out = []
    for proto, family, fname, want in (
        ("tcp", 4, "/proc/net/tcp", TCP_LISTEN),
        ("tcp", 6, "/proc/net/tcp6", TCP_LISTEN),
        ("udp", 4, "/proc/net/udp", UDP_UNCONN),
        ("udp", 6, "/proc/net/udp6", UDP_UNCONN),
    ):
        try:
            with open(fname) as fh:
                rows = fh.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if len(cols) < 10 or cols[3] != want:
                continue
            hexaddr, hexport = cols[1].split(":")
            inode = cols[9]
            pids = sorted(owners.get(inode, ()))
            out.append(
                {
                    "proto": proto,
                    "family": family,
                    "address": decode_addr(hexaddr, family),
                    "port": int(hexport, 16),
                    "pids": pids,
                    "units": sorted({pid_unit(p) for p in pids}),
                    "comms": sorted({pid_comm(p) for p in pids}),
                }
            )
    emit({"listeners": out})


# --- secret leaks -------------------------------------------------------------


def read_secrets():
    """Return {name: value} of every secret on the instance (never printed)."""
    found = {}
    with open(SECRETS_ENV) as fh:
        for raw in fh:
            line = raw.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            key, val = line.split("=", 1)
            key = key.strip()
            if key.startswith("export "):
                key = key[len("export ") :].strip()
            val = val.strip()
            if len(val) >= 2 and val[0] == val[-1] and val[0] in "'\"":
                val = val[1:-1]
            found[key] = val
            if "://" in val:
                parsed = urllib.parse.urlsplit(val)
                if parsed.password:
                    found[key + " (password part)"] = parsed.password
                    found[key + " (password part, decoded)"] = urllib.parse.unquote(parsed.password)
    try:
        with open(ADMIN_PASSWORD) as fh:
            found["admin password (" + ADMIN_PASSWORD + ")"] = fh.read().strip()
    except OSError:
        pass
    return {k: v for k, v in found.items() if len(v) >= MIN_SECRET_LEN}


def needles(secrets):
    out = {}
    for key, val in secrets.items():
        out.setdefault(val.encode("utf-8"), set()).add(key)
        # %-doubled form, as it must be written inside airflow.cfg
        if "%" in val:
            out.setdefault(val.replace("%", "%%").encode("utf-8"), set()).add(key)
    return out


def scan_stream(stream, pats):
    hits = set()
    longest = max(len(p) for p in pats)
    tail = b""
    while True:
        chunk = stream.read(1 << 20)
        if not chunk:
            break
        buf = tail + chunk
        for pat, keys in pats.items():
            if pat in buf:
                hits.update(keys)
        tail = buf[-longest:]
    return hits


def cmd_leaks(_args):
    secrets = read_secrets()
    pats = needles(secrets)
    findings = []
    skip = {os.path.realpath(SECRETS_ENV), os.path.realpath(ADMIN_PASSWORD)}
    scanned = 0
    if pats:
        for root in LEAK_SCAN_ROOTS:
            for dirpath, _dirs, files in os.walk(root):
                for name in files:
                    path = os.path.join(dirpath, name)
                    try:
                        st = os.lstat(path)
                    except OSError:
                        continue
                    if not stat.S_ISREG(st.st_mode) or st.st_size > LEAK_SCAN_MAX_FILE:
                        continue
                    world = bool(st.st_mode & stat.S_IROTH)
                    is_cfg = path.endswith("/airflow.cfg")
                    if (not world and not is_cfg) or os.path.realpath(path) in skip:
                        continue
                    scanned += 1
                    try:
                        with open(path, "rb") as fh:
                            hits = scan_stream(fh, pats)
                    except OSError:
                        continue
                    if hits:
                        findings.append(
                            {
                                "where": "file " + path,
                                "mode": oct(stat.S_IMODE(st.st_mode)),
                                "keys": sorted(hits),
                            }
                        )
        proc = subprocess.Popen(
            ["journalctl", "--no-pager", "-o", "json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        hits = scan_stream(proc.stdout, pats)
        proc.wait()
        if hits:
            findings.append({"where": "journal (journalctl -o json: MESSAGE/_CMDLINE)", "keys": sorted(hits)})
        me = os.getpid()
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or int(pid) == me:
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    args = fh.read().replace(b"\0", b" ")
            except OSError:
                continue
            hits = {k for pat, keys in pats.items() if pat in args for k in keys}
            if hits:
                findings.append(
                    {
                        "where": f"process args of pid {pid} ({pid_comm(int(pid))})",
                        "keys": sorted(hits),
                    }
                )
    emit(
        {
            "secret_keys": sorted(secrets),
            "files_scanned": scanned,
            "findings": findings,
        }
    )


# --- boots --------------------------------------------------------------------


def journal_json(args):
    proc = subprocess.run(
        ["journalctl", "--no-pager", "-o", "json", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    entries = []
    for line in proc.stdout.splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:
            continue
    return entries


def current_boot_id():
    with open("/proc/sys/kernel/random/boot_id") as fh:
        return fh.read().strip().replace("-", "")


def cmd_firstboot_journal(_args):
    own = journal_json(["_SYSTEMD_UNIT=" + FIRSTBOOT_UNIT])
    lines = {}
    for ent in own:
        msg = ent.get("MESSAGE")
        lines.setdefault(ent.get("_BOOT_ID"), []).append(msg if isinstance(msg, str) else "")
    boots = {}
    for boot, msgs in lines.items():
        text = "\n".join(msgs)
        if any(p in text for p in FIRSTBOOT_RAN):
            boots[boot] = "ran"
        elif any(p in text for p in FIRSTBOOT_SKIPPED):
            boots[boot] = "skipped"
        else:
            boots[boot] = "unclear: " + " | ".join(msgs[-3:])[:300]
    listed = subprocess.run(
        ["journalctl", "--no-pager", "--list-boots"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.splitlines()
    proc = subprocess.Popen(
        ["journalctl", "--no-pager", "-o", "short-unix", "-q"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    oldest_line = proc.stdout.readline() if proc.stdout else ""
    proc.kill()
    proc.wait()
    try:
        oldest = float(oldest_line.split()[0])
    except (IndexError, ValueError):
        oldest = None
    try:
        marker_mtime = os.stat(FIRSTBOOT_MARKER).st_mtime
    except OSError:
        marker_mtime = None
    emit(
        {
            "firstboot_boots": boots,
            "journal_boots": len([x for x in listed if x.strip()]),
            "persistent": os.path.isdir("/var/log/journal"),
            "current_boot": current_boot_id(),
            "oldest_entry": oldest,
            "marker_mtime": marker_mtime,
        }
    )


def cmd_boot_token(_args):
    """boot_id changes on every boot, also inside systemd-nspawn (it bind-mounts a
    fresh one per container boot); PID 1's start time covers the rest."""
    with open("/proc/1/stat") as fh:
        start_ticks = fh.read().rsplit(")", 1)[1].split()[19]
    emit({"token": current_boot_id() + ":" + start_ticks})


def tls_handshake(port, server_name, cafile):
    """ "" when the API's certificate verifies for ``server_name``, else the error."""
    context = ssl.create_default_context(cafile=cafile)
    try:
        # Nested, not one parenthesised `with`: that form needs Python 3.9 (Amazon Linux 2 has 3.7).
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:  # noqa: SIM117
            with context.wrap_socket(raw, server_hostname=server_name):
                return ""
    except (OSError, ssl.SSLError) as exc:
        return f"{type(exc).__name__}: {exc}"


def cmd_tls_check(_args):
    """The API's certificate, verified as each name of the instance; plain HTTP on its port."""
    port = int(load_settings()["api_port"])
    addresses = sorted({info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None)})
    names = ["127.0.0.1", "localhost", socket.gethostname(), *addresses]
    verified = {name: tls_handshake(port, name, layout.API_TLS_CERT) for name in names}
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{HEALTH_PATH}", timeout=10) as resp:
            plain = f"HTTP {resp.status}"
    except urllib.error.HTTPError as exc:
        plain = f"HTTP {exc.code}"
    except OSError as exc:
        plain = f"{type(exc).__name__}: {exc}"
    emit({"verified": verified, "plain_http": plain})


def proc_kib(path, field):
    """A "Field:   123 kB" value of a /proc file, 0 when the process is gone."""
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def memory_sample(units):
    """{unit: {"rss_mb", "pss_mb", "processes"}} of the processes in those units' cgroups.
    PSS splits pages shared by forked workers among them; RSS counts them in each."""
    found = {u: {"rss_mb": 0.0, "pss_mb": 0.0, "processes": 0} for u in units}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        unit = pid_unit(name)
        if unit not in found:
            continue
        rss = proc_kib(f"/proc/{name}/status", "VmRSS")
        if not rss:  # a kernel thread, or gone meanwhile
            continue
        found[unit]["rss_mb"] += rss / 1024
        found[unit]["pss_mb"] += proc_kib(f"/proc/{name}/smaps_rollup", "Pss") / 1024
        found[unit]["processes"] += 1
    return found


def cmd_memory(args):
    seconds, units = float(args[0]), args[1:]
    deadline = time.time() + seconds
    best = None
    while True:
        sample = memory_sample(units)
        total = sum(u["rss_mb"] for u in sample.values())
        if best is None or total > best["rss_mb"]:
            best = {"rss_mb": total, "pss_mb": sum(u["pss_mb"] for u in sample.values()), "units": sample}
        if time.time() >= deadline:
            break
        time.sleep(0.5)
    emit(best)


# What systemd records of a unit's start, as systemctl show names it (CLOCK_MONOTONIC, us).
UNIT_PHASES = {
    "started": "ExecMainStartTimestampMonotonic",
    "active": "ActiveEnterTimestampMonotonic",
    "exited": "ExecMainExitTimestampMonotonic",
}


def cmd_boot_phases(args):
    """PID 1's start as the wall clock read it (nothing was suspended since: the boot and
    monotonic clocks agree), and each unit's phases in seconds after it (0: not reached)."""
    with open("/proc/1/stat") as fh:
        stat_fields = fh.read().rsplit(")", 1)[1].split()
    pid1 = int(stat_fields[19]) / os.sysconf("SC_CLK_TCK")
    units = {}
    for unit in args:
        argv = ["systemctl", "show", unit] + ["-p" + p for p in UNIT_PHASES.values()]
        shown = dict(
            line.split("=", 1)
            for line in subprocess.check_output(argv, text=True).splitlines()
            if "=" in line
        )
        units[unit] = {
            phase: round(int(shown[prop]) / 1e6 - pid1, 2) if int(shown.get(prop) or 0) else 0
            for phase, prop in UNIT_PHASES.items()
        }
    emit({"pid1_wall": time.time() - time.clock_gettime(time.CLOCK_BOOTTIME) + pid1, "units": units})


# The execution API's paths, as the API server's access log names each request.
EXECUTION_API_PATH = "/execution/"


def cmd_api_calls(args):
    """Requests to the execution API (a task's: start, heartbeats, XComs, its end) since
    args[0], counted from the API server's access log in the journal."""
    lines = [
        entry.get("MESSAGE", "")
        for entry in journal_json(["-u", layout.API_SERVER_UNIT, "--since", "@%d" % int(float(args[0]))])
    ]
    emit({"execution_api_calls": sum(EXECUTION_API_PATH in str(m) for m in lines), "lines": len(lines)})


CGROUP_ROOT = "/sys/fs/cgroup"  # the instance's unified hierarchy


def cgroup_cpu_seconds(unit):
    """usage_usec of the unit's cgroup (every cgroup v2 has it, cpu controller or not)."""
    path = subprocess.run(
        ["systemctl", "show", "-P", "ControlGroup", unit], capture_output=True, text=True, check=False
    ).stdout.strip()
    if not path:
        return 0.0  # not running; CGROUP_ROOT's own cpu.stat is the whole instance's
    try:
        with open(CGROUP_ROOT + path + "/cpu.stat") as fh:
            usage = next(line.split()[1] for line in fh if line.startswith("usage_usec "))
    except (OSError, StopIteration):
        return 0.0  # not running: nothing used
    return int(usage) / 1e6


def cmd_cpu_seconds(args):
    emit({unit: round(cgroup_cpu_seconds(unit), 2) for unit in args})


def cmd_scan(args):
    """Which of the instance's secrets the file args[0] holds (names only, never values)."""
    with open(args[0], "rb") as fh:
        emit({"keys": sorted(scan_stream(fh, needles(read_secrets())))})


COMMANDS = {
    "api": cmd_api,
    "scan": cmd_scan,
    "tls-check": cmd_tls_check,
    "token-check": cmd_token_check,
    "wait-health": cmd_wait_health,
    "wait-dag": cmd_wait_dag,
    "wait-run": cmd_wait_run,
    "listeners": cmd_listeners,
    "leaks": cmd_leaks,
    "firstboot-journal": cmd_firstboot_journal,
    "boot-token": cmd_boot_token,
    "memory": cmd_memory,
    "boot-phases": cmd_boot_phases,
    "api-calls": cmd_api_calls,
    "cpu-seconds": cmd_cpu_seconds,
}


def main(argv):
    if not argv or argv[0] not in COMMANDS:
        sys.stderr.write("usage: probe.py {{{}}} ...\n".format(",".join(sorted(COMMANDS))))
        return 2
    COMMANDS[argv[0]](argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
