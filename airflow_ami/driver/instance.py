"""The instance driver: one `Instance` per host built from the image, driven over testinfra.

The verify suite (tests/infra), the e2e tests and `./bake bench` drive an
instance through it alike: its probe, its DAGs (driver/dags/), its scheduler
drop-ins. Everything that needs root goes through `Instance.sh` (plain when the
connection is already root, `sudo -n` otherwise). HTTP calls to the Airflow API
are made ON the instance by `probe.py` (the API port may be firewalled from the
runner), which also keeps secrets on the instance: the runner never sees the
admin password, a JWT or a database URL.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import shlex
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import testinfra

from airflow_ami.clouds import InstanceRecord
from airflow_ami.seam import SCRIPTS_DIR, SHARED_DIR, contract, layout
from airflow_ami.verify import ssh_config

HERE = Path(__file__).resolve().parent
PROBE_SRC = HERE / "probe.py"
DAGS_SRC = HERE / "dags"

# The image's own declaration (scripts/provisioning/shared/layout.py), under the names the suite uses.
SECRETS_ENV = layout.SECRETS_ENV
ADMIN_PASSWORD = layout.ADMIN_PASSWORD_FILE
API_TLS_CERT = layout.API_TLS_CERT
API_TLS_KEY = layout.API_TLS_KEY
AIRFLOW_ENV = layout.AIRFLOW_ENV
AIRFLOW_CFG = layout.AIRFLOW_CFG
AIRFLOW_HOME = layout.AIRFLOW_HOME
AIRFLOW_VENV_PYTHON = layout.VENV + "/bin/python"
AIRFLOW_CLI = layout.AIRFLOW_CLI
FIRSTBOOT_MARKER = layout.FIRSTBOOT_MARKER
FIRSTBOOT_UNIT = layout.FIRSTBOOT_UNIT
AIRFLOW_TARGET = layout.AIRFLOW_TARGET
# What a standalone instance runs (the single-instance checks); test_cluster.py the roles.
AIRFLOW_UNITS = tuple(s["unit"] for s in layout.AIRFLOW_SERVICES if "standalone" in s["roles"])
HEALTH_PATH = layout.HEALTH_PATH
HEALTH_COMPONENTS = layout.HEALTH_COMPONENTS

REMOTE_DIR = "/run/airflow-ami-testinfra"
SHARED_FOR_PROBE = ("__init__.py", "layout.py", "contract.py")
# The probe and the layout it reads travel together, in a directory named by their
# content, so sessions running different versions of the suite never mix.
_PROBE_FILES = {
    "probe.py": PROBE_SRC.read_bytes(),
    **{
        str(path.relative_to(SCRIPTS_DIR)): path.read_bytes()
        for path in (SHARED_DIR.parent / "__init__.py", *(SHARED_DIR / n for n in SHARED_FOR_PROBE))
    },
}
REMOTE_PROBE_DIR = f"{REMOTE_DIR}/{hashlib.sha256(b''.join(_PROBE_FILES.values())).hexdigest()[:12]}"
REMOTE_PROBE = f"{REMOTE_PROBE_DIR}/probe.py"
PROBE_MISSING_RC = 111

TEST_DAG_PREFIX = "airflow_ami_testinfra_"
FANOUT_DAG = "airflow_ami_testinfra_fanout"
# While a test kills what runs a task, the scheduler looks for such tasks sooner than
# Airflow's 300 s (the mechanism is the same): a task whose heartbeats stopped (its worker
# died), and tasks of a scheduler that died (orphans, reset and retried).
QUICK_TASK_RECOVERY = {"TASK_INSTANCE_HEARTBEAT_TIMEOUT": 45, "ORPHANED_TASKS_CHECK_INTERVAL": 30}
XCOM_DAG = "airflow_ami_testinfra_xcom"
INFLIGHT_DAG = "airflow_ami_testinfra_inflight"
OPERATORS_DAG = "airflow_ami_testinfra_operators"
MEMORY_DAG = "airflow_ami_testinfra_memory"
# An upgrade's last check on the new instance: one run, then the DAG and all of it removed.
CANARY_DAG = "airflow_ami_testinfra_canary"
# A task that tries every way to the instance's secrets and returns what it read.
UNTRUSTED_DAG = "airflow_ami_testinfra_untrusted"
TEST_DAGS = (FANOUT_DAG, XCOM_DAG, INFLIGHT_DAG, OPERATORS_DAG, MEMORY_DAG, CANARY_DAG, UNTRUSTED_DAG)

# On a cluster's controller: put (path given) or delete an object of the S3 DAG bundle.
S3_PUT = """
import boto3, json, sys
settings = json.load(open(%(settings)r))
region = json.load(open(%(record)r))["region"]
s3 = boto3.client("s3", region_name=region, endpoint_url=settings.get("aws_endpoint_url") or None)
bucket, key = sys.argv[1], sys.argv[2]
if len(sys.argv) > 3:
    s3.put_object(Bucket=bucket, Key=key, Body=open(sys.argv[3], "rb").read())
else:
    s3.delete_object(Bucket=bucket, Key=key)
"""


class InstanceError(AssertionError):
    """A command on the instance failed in a way that fails the test."""


def expect(expected: object, found: object, look: str) -> str:
    """The one format of every assertion message: expected, found, where to look."""
    return f"expected: {expected} | found: {found} | look at: {look}"


def journal(unit: str, lines: int = 50) -> str:
    return f"journalctl -u {unit} -n {lines} --no-pager"


def parse_size(value: str | int) -> int:
    """MySQL-style size ('64M', '1G', '4194304') -> bytes."""
    text = str(value).strip().upper()
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    if text and text[-1] in mult:
        return int(float(text[:-1]) * mult[text[-1]])
    return int(text)


def parse_version(text: str) -> tuple[int, ...]:
    """'8.4.3-0ubuntu' -> (8, 4, 3); stops at the first non-numeric part."""
    out: list[int] = []
    for part in text.strip().split("."):
        digits = ""
        for ch in part:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        out.append(int(digits))
        if len(digits) != len(part):
            break
    return tuple(out)


def parse_ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def max_concurrency(intervals: list[tuple[float, float]]) -> int:
    """Largest number of [start, end] intervals that share one instant."""
    events = sorted(
        [(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals],
        key=lambda ev: (ev[0], ev[1]),  # ends before starts at the same instant
    )
    best = cur = 0
    for _, delta in events:
        cur += delta
        best = max(best, cur)
    return best


def common_instant(intervals: list[tuple[float, float]]) -> float | None:
    """Return an instant inside every interval, or None if there is none."""
    if not intervals:
        return None
    latest_start = max(s for s, _ in intervals)
    earliest_end = min(e for _, e in intervals)
    return latest_start if latest_start < earliest_end else None


def is_loopback(address: str) -> bool:
    return address.startswith("127.") or address == "::1" or address.startswith("::ffff:127.")


@dataclass(frozen=True)
class ListenerRule:
    """One allowed listening socket. units: owning systemd units (any if empty)."""

    what: str
    proto: str
    port: int | None  # None: any port
    units: tuple[str, ...] = ()
    loopback_only: bool = True
    address: str | None = None  # only this address (None: any)

    def matches(self, sock: dict[str, Any]) -> bool:
        if sock["proto"] != self.proto or self.port not in (None, sock["port"]):
            return False
        if self.address not in (None, sock["address"]):
            return False
        if self.loopback_only and not is_loopback(sock["address"]):
            return False
        return not self.units or bool(set(sock["units"]) & set(self.units))


def listener_allow_list(
    api_port: int, mysql_unit: str, role: str = "standalone", redis_unit: str = ""
) -> tuple[ListenerRule, ...]:
    """The explicit allow-list of a `role`: everything else listening on the instance is a finding."""
    mysql_units = (mysql_unit,)
    common = (
        # reachable from the network: SSH, and per role below
        ListenerRule("sshd", "tcp", None, ("ssh.service", "sshd.service"), False),
        ListenerRule("sshd (socket-activated)", "tcp", 22, ("init.scope",), False),
        # loopback only
        ListenerRule("systemd-resolved stub", "tcp", 53, ("systemd-resolved.service",)),
        ListenerRule("systemd-resolved stub", "udp", 53, ("systemd-resolved.service",)),
        ListenerRule("chrony command port", "udp", 323, ("chronyd.service", "chrony.service")),
        # A metadata service that serves the instance from its own network namespace
        # (the local cloud's) shows here; link-local, owned by no process of the instance.
        ListenerRule("instance metadata service", "tcp", 80, (), False, "169.254.169.254"),
        # Airflow's StatsD, to the metrics shipper (CloudWatch)
        ListenerRule("metrics StatsD listener", "udp", layout.STATSD_PORT, (layout.METRICS_UNIT,)),
        # DHCP clients bind the wildcard address by necessity
        ListenerRule("DHCPv4 client", "udp", 68, (), False),
        ListenerRule("DHCPv6 client", "udp", 546, (), False),
    )
    if role == "worker":
        # The controller's api-server reads task logs here (the cluster's security group only).
        worker_unit = next(s["unit"] for s in layout.AIRFLOW_SERVICES if s["roles"] == ("worker",))
        return (
            *common,
            ListenerRule("Celery worker log server", "tcp", layout.WORKER_LOG_PORT, (worker_unit,), False),
        )
    database_node = (
        ListenerRule("Airflow API server", "tcp", api_port, ("airflow-api-server.service",), False),
        ListenerRule("MySQL", "tcp", layout.IMAGE_PORTS["MySQL"], mysql_units),
        ListenerRule("MySQL X protocol", "tcp", layout.IMAGE_PORTS["MySQL X protocol"], mysql_units),
        ListenerRule(
            "Airflow task log server", "tcp", layout.IMAGE_PORTS["task log server"], (layout.SCHEDULER_UNIT,)
        ),
        ListenerRule(
            "Airflow triggerer log server",
            "tcp",
            layout.IMAGE_PORTS["trigger log server"],
            ("airflow-triggerer.service",),
        ),
    )
    if role == "controller":
        # The broker, on the private address too: test_cluster.py checks which addresses.
        return (
            *common,
            *database_node,
            ListenerRule("Redis", "tcp", layout.REDIS_PORT, (redis_unit,), False),
        )
    return (*common, *database_node)


def unexpected_listeners(
    listeners: list[dict[str, Any]],
    rules: tuple[ListenerRule, ...],
    *,
    ignore_unowned: bool = False,
) -> list[dict[str, Any]]:
    """Listeners no rule allows. ignore_unowned: skip sockets with no visible owner
    (only meaningful when the instance shares its network namespace with others)."""
    return [
        s
        for s in listeners
        if not any(r.matches(s) for r in rules) and not (ignore_unowned and not s["pids"])
    ]


def describe_listener(sock: dict[str, Any]) -> str:
    addr = sock["address"]
    addr = f"[{addr}]" if ":" in addr else addr
    owner = ",".join(sock["units"]) or "?"
    comm = ",".join(sock["comms"]) or "?"
    return f"{sock['proto']} {addr}:{sock['port']} (unit {owner}, process {comm})"


@dataclass
class Instance:
    """A host under test plus what the suite learned about it (cached)."""

    host: Any
    sleep_seconds: int = 15
    run_timeout: float = 600.0
    recovery_timeout: float = 240.0
    reboot_timeout: float = 900.0
    keep_dags: bool = False
    extra_allowed: tuple[ListenerRule, ...] = ()
    ignore_unowned_listeners: bool = False
    _cache: dict[str, Any] = field(default_factory=dict)
    uploaded_dags: set[str] = field(default_factory=set)
    runs: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def of(cls, launched: InstanceRecord, config: Path, **options: Any) -> Instance:
        """The driver of a launched instance, over SSH with `config` written for its key."""
        written = ssh_config(config, launched)
        host = testinfra.get_host(f"ssh://{launched.ssh_user}@{launched.address}", ssh_config=str(written))
        return cls(host=host, **options)

    # --- commands ------------------------------------------------------------
    @property
    def is_root(self) -> bool:
        if "is_root" not in self._cache:
            self._cache["is_root"] = self.host.run("id -u").stdout.strip() == "0"
        return bool(self._cache["is_root"])

    def sh(self, cmd: str) -> Any:
        """Run a shell command as root on the instance."""
        if not self.is_root:
            cmd = "sudo -n sh -c " + shlex.quote(cmd)
        return self.host.run(cmd)

    def check(self, cmd: str, look: str = "") -> str:
        res = self.sh(cmd)
        if res.rc != 0:
            raise InstanceError(
                expect(
                    f"`{cmd}` to exit 0",
                    f"exit {res.rc}: {(res.stderr or res.stdout).strip()[-1500:]}",
                    look or "the command's output above",
                )
            )
        return str(res.stdout)

    def write_file(self, path: str, data: bytes, mode: str = "0644", owner: str = "root") -> None:
        b64 = base64.b64encode(data).decode("ascii")
        tmp = f"{path}.testinfra-tmp"
        self.check(
            f"umask 077 && printf %s {b64} | base64 -d > {shlex.quote(tmp)}"
            f" && chown {owner}:{owner} {shlex.quote(tmp)} && chmod {mode} {shlex.quote(tmp)}"
            f" && mv -f {shlex.quote(tmp)} {shlex.quote(path)}"
        )

    def read_text(self, path: str) -> str:
        return self.check(f"cat {shlex.quote(path)}")

    @contextlib.contextmanager
    def quick_task_recovery(self) -> Iterator[None]:
        """For the duration, the scheduler finds tasks whose runner died within a minute
        instead of Airflow's five."""
        with self.scheduler_env({f"AIRFLOW__SCHEDULER__{k}": v for k, v in QUICK_TASK_RECOVERY.items()}):
            yield

    @contextlib.contextmanager
    def scheduler_env(self, values: dict[str, object]) -> Iterator[None]:
        """For the duration, the scheduler runs with these extra environment variables:
        a runtime drop-in (also gone at a reboot), the scheduler restarted at both ends."""
        unit = "airflow-scheduler.service"
        drop_in = f"/run/systemd/system/{unit}.d/zz-testinfra-env.conf"
        lines = "".join(f"Environment={k}={v}\n" for k, v in values.items())
        self.check(f"mkdir -p {shlex.quote(drop_in.rsplit('/', 1)[0])}")
        self.write_file(drop_in, f"[Service]\n{lines}".encode())
        try:
            self.check(f"systemctl daemon-reload && systemctl restart {unit}")
            yield
        finally:
            self.check(f"rm -f {drop_in} && systemctl daemon-reload && systemctl restart {unit}")
            state = self.wait_healthy(self.recovery_timeout)
            assert state["healthy"], self.health_message(
                state, "after the scheduler's settings were restored"
            )

    # --- probe (instance-side helper) -----------------------------------------
    def upload_probe(self) -> None:
        self.check(f"mkdir -p -m 0700 {REMOTE_DIR} {REMOTE_PROBE_DIR}/{SHARED_DIR.relative_to(SCRIPTS_DIR)}")
        for name, data in _PROBE_FILES.items():
            self.write_file(f"{REMOTE_PROBE_DIR}/{name}", data, mode="0600")

    def probe(self, *args: str) -> dict[str, Any]:
        quoted = " ".join(shlex.quote(a) for a in args)
        cmd = (
            f"if [ -f {REMOTE_PROBE} ]; then exec python3 {REMOTE_PROBE} {quoted};"
            f" else exit {PROBE_MISSING_RC}; fi"
        )
        res = self.sh(cmd)
        if res.rc == PROBE_MISSING_RC:
            self.upload_probe()
            res = self.sh(cmd)
        out = res.stdout.strip()
        if res.rc != 0 or not out:
            raise InstanceError(
                expect(
                    f"probe `{' '.join(args)}` to succeed",
                    f"exit {res.rc}: {(res.stderr or out).strip()[-1500:]}",
                    f"{journal('airflow-api-server.service')}; cat {layout.BAKED_SETTINGS}",
                )
            )
        return dict(json.loads(out.splitlines()[-1]))

    def remove_probe(self) -> None:
        self.sh(f"rm -rf {REMOTE_PROBE_DIR}; rmdir {REMOTE_DIR} 2>/dev/null; true")

    # --- settings, units, CLI -------------------------------------------------
    @property
    def settings(self) -> dict[str, Any]:
        if "settings" not in self._cache:
            self._cache["settings"] = contract.checked_settings(
                json.loads(self.read_text(layout.BAKED_SETTINGS))
            )
        return contract.Settings(self._cache["settings"])

    @property
    def api_port(self) -> int:
        return int(self.settings["api_port"])

    @property
    def mysql_unit(self) -> str:
        """MySQL's unit as baked into the image (os_facts in settings.json)."""
        return str(self.settings["os_facts"]["mysql_unit"])

    def unit_props(self, unit: str, *props: str) -> dict[str, str]:
        flags = " ".join(f"-p {p}" for p in props)
        res = self.sh(f"systemctl show {flags} {shlex.quote(unit)}")
        out: dict[str, str] = {}
        for line in res.stdout.splitlines():
            key, _, val = line.partition("=")
            out[key] = val
        return out

    def is_enabled(self, unit: str) -> str:
        res = self.sh(f"systemctl is-enabled {shlex.quote(unit)}")
        return (res.stdout.strip() or res.stderr.strip() or f"exit {res.rc}").splitlines()[0]

    def airflow(self, args: str) -> Any:
        return self.sh(f"{AIRFLOW_CLI} {args}")

    def airflow_config(self, section: str, key: str, *, fresh: bool = False) -> str:
        """`airflow config get-value SECTION KEY` through the wrapper (cached)."""
        ck = f"cfg:{section}.{key}"
        if fresh or ck not in self._cache:
            res = self.airflow(f"config get-value {section} {key}")
            if res.rc != 0:
                raise InstanceError(
                    expect(
                        f"`{AIRFLOW_CLI} config get-value {section} {key}` to print a value",
                        f"exit {res.rc}: {res.stderr.strip()[-800:]}",
                        f"{AIRFLOW_CLI} config get-value {section} {key}; {AIRFLOW_CFG}; {AIRFLOW_ENV}",
                    )
                )
            lines = [ln for ln in res.stdout.splitlines() if ln.strip()]
            self._cache[ck] = lines[-1].strip() if lines else ""
        return str(self._cache[ck])

    def sizing(self) -> dict[str, int]:
        """What the image's own sizing rules (provisioning/boot/sizing.py) give for this instance's
        memory, computed on the instance by its installed code."""
        if "sizing" not in self._cache:
            script = (
                f"import json, sys; sys.path.insert(0, {layout.CODE_DIR!r});"
                "import os; c = len(os.sched_getaffinity(0));"
                "from provisioning.boot.firstboot import instance_memory_mib;"
                "from provisioning.boot.sizing import api_workers_for as a, buffer_pool_mib_for as b;"
                "m = instance_memory_mib();"
                "print(json.dumps({'cpus': c, 'mem_mib': m, 'api_workers': a(c, m),"
                " 'buffer_pool_mib': b(m)}))"
            )
            self._cache["sizing"] = json.loads(self.check(f"python3 -c {shlex.quote(script)}"))
        return dict(self._cache["sizing"])

    def parallelism(self) -> int:
        return int(self.airflow_config("core", "parallelism"))

    def mysql(self, sql: str) -> list[list[str]]:
        res = self.sh(f"mysql --batch --skip-column-names -e {shlex.quote(sql)}")
        if res.rc != 0:
            raise InstanceError(
                expect(
                    "root to reach MySQL over its socket (`sudo mysql`)",
                    f"exit {res.rc}: {res.stderr.strip()[-800:]}",
                    f"{journal(self.mysql_unit)}; mysql.user root plugin auth_socket",
                )
            )
        return [line.split("\t") for line in res.stdout.splitlines() if line != ""]

    def task_figures(self) -> dict[str, int]:
        """Task instances queued and running now, failed and succeeded in the last hour
        (one query of the metadata database: no API token needed)."""
        rows = self.mysql(
            "SELECT state, COUNT(*) FROM airflow.task_instance WHERE state IN ('queued', 'running')"
            " OR (state IN ('failed', 'success') AND end_date > NOW() - INTERVAL 1 HOUR) GROUP BY state"
        )
        counted = {state: int(count) for state, count in rows}
        return {
            "queued": counted.get("queued", 0),
            "running": counted.get("running", 0),
            "failed in the last hour": counted.get("failed", 0),
            "succeeded in the last hour": counted.get("success", 0),
        }

    # --- API ------------------------------------------------------------------
    def api(
        self, method: str, path: str, body: object | None = None, *, auth: bool = True
    ) -> tuple[int, Any]:
        args = ["api", method, path]
        if body is not None:
            args.append(json.dumps(body))
        if not auth:
            args.append("--no-auth")
        doc = self.probe(*args)
        return int(doc["status"]), doc.get("body")

    def wait_healthy(self, timeout: float | None = None) -> dict[str, Any]:
        return self.probe("wait-health", str(timeout if timeout is not None else 0))

    def health_message(self, state: dict[str, Any], context: str) -> str:
        bad = {
            c: state.get("components", {}).get(c, "missing")
            for c in HEALTH_COMPONENTS
            if state.get("components", {}).get(c) != "healthy"
        }
        return expect(
            f"{context}: {HEALTH_PATH} HTTP 200 with " + ", ".join(f"{c}=healthy" for c in HEALTH_COMPONENTS),
            f"HTTP {state.get('http_status')} {state.get('error') or ''} "
            f"components {state.get('components')} (unhealthy: {bad}) "
            f"after {state.get('waited')} s",
            "; ".join(journal(u) for u in AIRFLOW_UNITS[:3]) + f"; {journal(self.mysql_unit)}",
        )

    # --- test DAGs ------------------------------------------------------------
    @property
    def dags_folder(self) -> str:
        return self.airflow_config("core", "dags_folder")

    def ensure_dags(self, dag_ids: tuple[str, ...] = TEST_DAGS) -> None:
        """Upload the suite's DAG files (or those named) once per session and wait until registered."""
        missing = [d for d in dag_ids if d not in self.uploaded_dags]
        if not missing:
            return
        for dag_id in missing:
            self.write_file(
                f"{self.dags_folder}/{dag_id}.py",
                (DAGS_SRC / f"{dag_id}.py").read_bytes(),
                owner="airflow",
            )
            self.uploaded_dags.add(dag_id)
        # Parse now instead of waiting for [dag_processor] refresh_interval.
        reserialize = self.airflow("dags reserialize")
        for dag_id in missing:
            wait = self.probe("wait-dag", dag_id, "90" if reserialize.rc == 0 else "420")
            if wait["status"] != 200:
                _, errors = self.api("GET", "/api/v2/importErrors?limit=100")
                ours = [
                    e
                    for e in (errors or {}).get("import_errors", [])
                    if TEST_DAG_PREFIX in str(e.get("filename", ""))
                ]
                raise InstanceError(
                    expect(
                        f"DAG {dag_id} registered after upload to {self.dags_folder}",
                        f"GET /api/v2/dags/{dag_id} -> {wait['status']} after "
                        f"{wait['waited']} s; `airflow dags reserialize` exit "
                        f"{reserialize.rc}; import errors: {ours}",
                        f"{journal('airflow-dag-processor.service')}; {AIRFLOW_CLI} dags list-import-errors",
                    )
                )

    @contextlib.contextmanager
    def in_the_bundle(self, dag_id: str) -> Iterator[None]:
        """A cluster's controller: `dag_id` put in the cluster's S3 DAG bundle and registered
        there, so every worker runs it; taken out again at the end."""
        bundles = json.loads(self.airflow_config("dag_processor", "dag_bundle_config_list"))
        kwargs = bundles[0]["kwargs"]
        key = "/".join(p for p in (kwargs["prefix"], f"{dag_id}.py") if p)
        script = S3_PUT % {"settings": layout.BAKED_SETTINGS, "record": FIRSTBOOT_MARKER}
        local = f"/run/{dag_id}.py"
        self.write_file(local, (DAGS_SRC / f"{dag_id}.py").read_bytes())
        put = f"{AIRFLOW_VENV_PYTHON} -c {shlex.quote(script)} {kwargs['bucket_name']} {shlex.quote(key)}"
        self.check(f"{put} {local}")
        self.airflow(f"dags reserialize --bundle-name {bundles[0]['name']}")
        wait = self.probe("wait-dag", dag_id, "420")
        if wait["status"] != 200:
            raise InstanceError(
                expect(
                    f"{dag_id} registered from s3://{kwargs['bucket_name']}/{key}",
                    wait,
                    journal("airflow-dag-processor.service", 80),
                )
            )
        self.uploaded_dags.add(dag_id)
        try:
            yield
        finally:
            self.check(put)
            self.sh(f"rm -f {local}")

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        if dag_id not in self.uploaded_dags:
            self.ensure_dags((dag_id,))
        status, body = self.api("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
        if status != 200:
            raise InstanceError(
                expect(
                    f"PATCH /api/v2/dags/{dag_id} (unpause) -> 200",
                    f"{status} {body}",
                    journal("airflow-api-server.service"),
                )
            )
        run_id = f"testinfra__{uuid.uuid4().hex[:12]}"
        status, body = self.api(
            "POST",
            f"/api/v2/dags/{dag_id}/dagRuns",
            {"dag_run_id": run_id, "logical_date": None, "conf": conf or {}},
        )
        if status not in (200, 201):
            raise InstanceError(
                expect(
                    f"POST /api/v2/dags/{dag_id}/dagRuns -> 200",
                    f"{status} {body}",
                    journal("airflow-api-server.service"),
                )
            )
        self.runs.append((dag_id, run_id))
        return run_id

    def wait_run(self, dag_id: str, run_id: str, timeout: float | None = None) -> dict[str, Any]:
        return self.probe(
            "wait-run", dag_id, run_id, str(timeout if timeout is not None else self.run_timeout)
        )

    def run_summary(self, run: dict[str, Any]) -> str:
        tis = run.get("task_instances") or []
        parts = [
            f"{t.get('task_id')}[{t.get('map_index')}]={t.get('state')}(try {t.get('try_number')})"
            for t in tis
        ]
        return f"run state {run.get('state')} after {run.get('waited')} s; tasks: {parts}"

    def cleanup(self) -> list[str]:
        """Remove the suite's DAG files, their metadata, logs and the probe."""
        problems: list[str] = []
        if self.keep_dags:
            return problems
        if self.uploaded_dags:
            folder = self.dags_folder
            files = " ".join(
                f"{folder}/{d}.py {folder}/__pycache__/{d}.*" for d in sorted(self.uploaded_dags)
            )
            self.sh(f"rm -f {files}")
            for dag_id, run_id in self.runs:
                self.api(
                    "PATCH",
                    f"/api/v2/dags/{dag_id}/dagRuns/{run_id}",
                    {"state": "failed"},
                )
            for dag_id in sorted(self.uploaded_dags):
                status = 0
                for _ in range(20):
                    status, _body = self.api("DELETE", f"/api/v2/dags/{dag_id}")
                    if status in (204, 404):
                        break
                    time.sleep(3)
                if status not in (204, 404):
                    problems.append(f"DELETE /api/v2/dags/{dag_id} -> {status}")
            try:
                logs = self.airflow_config("logging", "base_log_folder")
            except InstanceError:
                logs = f"{AIRFLOW_HOME}/logs"
            self.sh(
                f"find {shlex.quote(logs)} -depth -name '*{TEST_DAG_PREFIX}*' "
                "-exec rm -rf {} + 2>/dev/null; true"
            )
            self.uploaded_dags.clear()
            self.runs.clear()
        self.remove_probe()
        return problems

    # --- boots ----------------------------------------------------------------
    def boot_token(self) -> str:
        return str(self.probe("boot-token")["token"])

    def reset_connection(self) -> None:
        """Drop a cached connection (paramiko) so the next command reconnects."""
        backend = self.host.backend
        backend.__dict__.pop("client", None)

    def request_reboot(self) -> None:
        """Ask for a reboot in two seconds and return; the instance goes down after."""
        # RuntimeError: the connection dropped under us, the reboot has started.
        with contextlib.suppress(RuntimeError):
            self.sh(
                'systemd-run --on-active=2 "$(command -v systemctl)" reboot >/dev/null 2>&1'
                " || systemctl --no-block reboot"
            )

    def reboot(self) -> float:
        """Reboot and wait until the instance answers from a new boot. Returns seconds."""
        before = self.boot_token()
        start = time.monotonic()
        self.request_reboot()
        last_error = ""
        while time.monotonic() - start < self.reboot_timeout:
            time.sleep(5)
            try:
                token = self.boot_token()
            except (RuntimeError, InstanceError, OSError, ValueError) as exc:
                last_error = str(exc)[-300:]
                self.reset_connection()
                continue
            if token != before:
                return time.monotonic() - start
        raise InstanceError(
            expect(
                f"the instance back from `systemctl reboot` within {self.reboot_timeout:.0f} s",
                f"still the old boot or unreachable ({last_error})",
                "the instance console / `journalctl -b -1 -n 100` once it is reachable",
            )
        )
