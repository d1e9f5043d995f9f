"""A cluster: the controller (--hosts) and its workers (--airflow-ami-worker, repeated).

Selected instead of the single-instance checks when workers are given (conftest.py).
DAGs reach every node through the cluster's S3 DAG bundle: the suite puts its fan-out
DAG there from the controller (with the controller's instance role) and removes it after.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_ami.driver.instance import (
    FANOUT_DAG,
    FIRSTBOOT_MARKER,
    INFLIGHT_DAG,
    SECRETS_ENV,
    UNTRUSTED_DAG,
    Instance,
    describe_listener,
    expect,
    journal,
    layout,
    listener_allow_list,
    parse_ts,
    unexpected_listeners,
)
from tests.infra.untrusted import assert_reaches_no_secret, untrusted_task_reached

CONTROLLER_UNITS = tuple(s["unit"] for s in layout.AIRFLOW_SERVICES if "controller" in s["roles"])
WORKER_UNIT = layout.WORKER_SERVICE["unit"]
# What a worker holds of its controller's secrets: the API secret key (its log server checks the
# api-server's requests by it); the broker's password is in its URL. And what it must not hold.
SHARED = ("AIRFLOW__API__SECRET_KEY",)
NOT_ON_A_WORKER = (
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "AIRFLOW__CORE__FERNET_KEY",
    "AIRFLOW__API_AUTH__JWT_SECRET",
)
# The S3 client of the controller's venv, with its instance role (IMDS) and region.
# On a node: how many secrets.env values its user data holds, and the user data's length.
USER_DATA_LEAKS = f"""
import sys
sys.path.insert(0, {layout.CODE_DIR!r})
from provisioning.shared.awsapi import Imds
from provisioning.shared.envfile import read_env_file
user_data = Imds().get("user-data") or ""
values = [v for v in read_env_file({SECRETS_ENV!r}).values() if len(v) >= 8]
print(sum(1 for v in values if v in user_data), len(user_data))
"""


def active(node: Instance, unit: str) -> str:
    return node.sh(f"systemctl is-active {unit}").stdout.strip()


def secret_digests(node: Instance) -> dict[str, str]:
    """sha256 of each secrets.env value (values never leave the node)."""
    out = node.check(
        f"grep -v '^#' {SECRETS_ENV} | while IFS== read -r key value; do "
        'printf "%s %s\\n" "$key" "$(printf %s "$value" | sha256sum | cut -c1-64)"; done'
    )
    return dict(line.split() for line in out.splitlines() if line.strip())


def test_the_controller_runs_airflow_and_a_broker_for_the_cluster_only(instance: Instance) -> None:
    assert json.loads(instance.read_text(FIRSTBOOT_MARKER)).get("role") == "controller"
    down = {u: active(instance, u) for u in (*CONTROLLER_UNITS, instance.mysql_unit)}
    assert set(down.values()) == {"active"}, expect(
        "every controller unit active", down, journal(WORKER_UNIT)
    )
    assert active(instance, WORKER_UNIT) != "active", "a controller runs no Celery worker"
    redis = [s for s in instance.probe("listeners")["listeners"] if s["port"] == layout.REDIS_PORT]
    addresses = sorted(s["address"] for s in redis)
    private = instance.check("hostname -I").split()[0]
    assert addresses and set(addresses) <= {"127.0.0.1", private}, expect(
        f"Redis on 127.0.0.1 and {private} only (never 0.0.0.0)",
        [describe_listener(s) for s in redis] or "no Redis listener",
        layout.REDIS_CONF,
    )
    rules = listener_allow_list(
        instance.api_port, instance.mysql_unit, "controller", instance.settings["os_facts"]["redis_unit"]
    )
    extra = unexpected_listeners(instance.probe("listeners")["listeners"], rules)
    assert not extra, expect(
        "only the controller's listeners", [describe_listener(s) for s in extra], "ss -tulpn"
    )
    refused = instance.sh(f"redis-cli -h {private} -p {layout.REDIS_PORT} ping").stdout.strip()
    assert "NOAUTH" in refused, expect(
        "Redis to refuse a client without the password", refused, layout.REDIS_CONF
    )


def test_the_broker_s_account_runs_celery_s_commands_and_none_that_reconfigure_it(instance: Instance) -> None:
    as_celery = (
        f"REDISCLI_AUTH=\"$(sed -n 's|^AIRFLOW__CELERY__BROKER_URL=.redis://[^:]*:\\([^@]*\\)@.*|\\1|p'"
        f' {SECRETS_ENV})" redis-cli --user {layout.BROKER_USER} -p {layout.REDIS_PORT}'
    )
    answers = {
        command: instance.sh(f"{as_celery} {command}").stdout.strip()
        for command in (
            "PING",
            "CONFIG GET dir",
            "DEBUG SLEEP 0",
            "REPLICAOF NO ONE",
            "MODULE LIST",
            "FLUSHALL",
        )
    }
    assert answers["PING"] == "PONG", expect("PONG as the broker's user", answers["PING"], layout.REDIS_CONF)
    # NOPERM (the ACL), or ERR for DEBUG, which Redis refuses to anyone unless enabled.
    allowed = {c: a for c, a in answers.items() if c != "PING" and not a.startswith(("NOPERM", "ERR"))}
    assert not allowed, expect(
        f"{layout.BROKER_USER} refused every command that reconfigures, replicates or wipes Redis",
        allowed,
        f"the user line of {layout.REDIS_CONF}; redis-cli ACL GETUSER {layout.BROKER_USER}",
    )


def test_workers_run_a_celery_worker_and_nothing_of_the_controller(workers: list[Instance]) -> None:
    assert workers, "no --airflow-ami-worker given"
    for node in workers:
        assert active(node, WORKER_UNIT) == "active", expect(
            f"{WORKER_UNIT} active on {node.host.backend.get_pytest_id()}",
            active(node, WORKER_UNIT),
            journal(WORKER_UNIT),
        )
        running = {u: active(node, u) for u in (*CONTROLLER_UNITS, node.mysql_unit)}
        assert "active" not in running.values(), expect(
            "no scheduler, API server or MySQL on a worker", running, ""
        )
        rules = listener_allow_list(0, node.mysql_unit, "worker")
        extra = unexpected_listeners(node.probe("listeners")["listeners"], rules)
        assert not extra, expect(
            f"a worker listening on SSH and its log server ({layout.WORKER_LOG_PORT}) only",
            [describe_listener(s) for s in extra],
            "ss -tulpn",
        )


def test_workers_hold_only_the_secrets_they_need_and_share_those_with_the_controller(
    instance: Instance, workers: list[Instance]
) -> None:
    controller = secret_digests(instance)
    for node in workers:
        theirs = secret_digests(node)
        held = [name for name in NOT_ON_A_WORKER if name in theirs]
        assert not held, expect(
            "a worker without the database URL, fernet key or JWT secret", held, SECRETS_ENV
        )
        assert "AIRFLOW__CELERY__BROKER_URL" in theirs, expect(
            "the broker's URL on the worker", theirs, SECRETS_ENV
        )
        differ = [name for name in SHARED if theirs.get(name) != controller.get(name)]
        assert not differ, expect("the worker's shared secrets equal the controller's", differ, SECRETS_ENV)
        leaked = node.check(f"python3 -c {shlex.quote(USER_DATA_LEAKS)}").split()
        assert int(leaked[1]) > 0 and leaked[0] == "0", expect(
            "user data (read from IMDS) holding no value of secrets.env", f"{leaked[0]} values in it", ""
        )
    for node in (instance, *workers):
        found = node.probe("leaks")
        exposed = [f"{f['where']} leaks {f['keys']}" for f in found["findings"]]
        assert len(found["secret_keys"]) >= 3 and not exposed, expect(
            "no secret in world-readable files, the journal or process arguments",
            exposed or found["secret_keys"],
            SECRETS_ENV,
        )


@pytest.mark.timeout(600)
def test_a_worker_s_task_of_an_untrusted_author_reaches_no_secret_of_the_cluster(
    instance: Instance, workers: list[Instance]
) -> None:
    with instance.in_the_bundle(UNTRUSTED_DAG):
        reached = untrusted_task_reached(instance, [instance, *workers])
    assert_reaches_no_secret(reached)


@pytest.fixture(scope="module")
def bundle_fanout(instance: Instance) -> Iterator[None]:
    with instance.in_the_bundle(FANOUT_DAG):
        yield


@pytest.fixture(scope="module")
def bundle_inflight(instance: Instance) -> Iterator[None]:
    with instance.in_the_bundle(INFLIGHT_DAG):
        yield


def test_a_fan_out_spreads_over_the_workers_and_overlaps(
    instance: Instance, workers: list[Instance], bundle_fanout: None
) -> None:
    concurrency = _concurrency(workers[0])
    n = concurrency * len(workers) + 2
    run_id = instance.trigger(FANOUT_DAG, {"n": n, "seconds": 10})
    run = instance.wait_run(FANOUT_DAG, run_id)
    tis = run.get("task_instances") or []
    assert run["state"] == "success", expect(
        f"{FANOUT_DAG} x{n} to succeed", instance.run_summary(run), journal(WORKER_UNIT)
    )
    where: dict[str, list[tuple[float, float]]] = {}
    for ti in tis:
        if ti.get("start_date") and ti.get("end_date"):
            where.setdefault(ti.get("hostname") or "?", []).append(
                (parse_ts(ti["start_date"]), parse_ts(ti["end_date"]))
            )
    assert len(where) >= 2, expect(
        f"{n} tasks (one worker runs {concurrency}) on two workers or more", sorted(where), ""
    )
    spans = [(min(s for s, _ in v), max(e for _, e in v)) for v in where.values()]
    assert max(s for s, _ in spans) < min(e for _, e in spans), expect(
        "the workers' task intervals to overlap", spans, ""
    )
    ti = next(t for t in tis if t.get("hostname"))
    path = (
        f"/api/v2/dags/{FANOUT_DAG}/dagRuns/{run_id}/taskInstances/{ti['task_id']}/logs/"
        f"{ti.get('try_number') or 1}?full_content=true&map_index={ti.get('map_index', -1)}"
    )
    status, body = instance.api("GET", path)
    text = json.dumps(body)
    fetched = status == 200 and "Could not read served logs" not in text and "Returned value" in text
    assert fetched, expect(
        f"the log of a task run on worker {ti['hostname']}, read through the controller's API",
        f"{status} {text[:600]}",
        f"{path}; {journal('airflow-api-server.service')}",
    )


def _concurrency(worker: Instance) -> int:
    for line in worker.read_text(layout.ROLE_ENV).splitlines():
        if line.startswith("AIRFLOW__CELERY__WORKER_CONCURRENCY="):
            return int(line.split("=", 1)[1].strip("'"))
    return 16


def reaches(node: Instance, address: str, port: int) -> bool:
    """Does a TCP connection from `node` to address:port open (within 5 s)?"""
    return node.sh(f"timeout 5 bash -c '</dev/tcp/{address}/{port}'").rc == 0


def test_the_security_group_opens_the_cluster_ports_and_nothing_else(
    instance: Instance, workers: list[Instance]
) -> None:
    controller = instance.check("hostname -I").split()[0]
    opened = {port: reaches(workers[0], controller, port) for port in (layout.REDIS_PORT, instance.api_port)}
    assert all(opened.values()), expect("a worker reaching the broker and the execution API", opened, "vpc")
    closed = {port: reaches(workers[0], controller, port) for port in (22, 8794)}
    assert not any(closed.values()), expect(
        "SSH and every port outside the cluster's group closed between members", closed, "the security group"
    )


def worker_at(workers: list[Instance], address: str) -> Instance:
    return next(w for w in workers if w.check("hostname -I").split()[0] == address)


def running_tis(instance: Instance, dag_id: str, run_id: str, timeout: float = 300) -> list[dict[str, Any]]:
    path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body = instance.api("GET", path)
        tis = [t for t in (body or {}).get("task_instances", []) if t.get("state") == "running"]
        if status == 200 and tis and all(t.get("hostname") for t in tis):
            return tis
        time.sleep(2)
    raise AssertionError(expect(f"a task of {dag_id} {run_id} running within {timeout:.0f} s", "none", ""))


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_stopping_a_worker_lets_its_tasks_finish(
    instance: Instance, workers: list[Instance], bundle_fanout: None
) -> None:
    run_id = instance.trigger(FANOUT_DAG, {"n": 2, "seconds": 20})
    node = worker_at(workers, running_tis(instance, FANOUT_DAG, run_id)[0]["hostname"])
    try:
        node.check(f"systemctl stop {WORKER_UNIT}")  # returns once the warm shutdown is over
        run = instance.wait_run(FANOUT_DAG, run_id)
    finally:
        node.check(f"systemctl start {WORKER_UNIT}")
    tries = {t["map_index"]: (t["state"], t.get("try_number")) for t in run.get("task_instances") or []}
    assert run["state"] == "success" and all(t == ("success", 1) for t in tries.values() if t[0]), expect(
        "every task finished on its first try though its worker was stopped (warm shutdown)",
        instance.run_summary(run),
        journal(WORKER_UNIT),
    )


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_a_killed_worker_s_task_is_retried_on_another_worker(
    instance: Instance, workers: list[Instance], bundle_inflight: None
) -> None:
    with instance.quick_task_recovery():
        run_id = instance.trigger(INFLIGHT_DAG)
        first = running_tis(instance, INFLIGHT_DAG, run_id)[0]
        node = worker_at(workers, first["hostname"])
        try:
            # A lost worker: its Celery worker and its tasks' units (they run outside the
            # worker's own unit, as the task user) die together.
            slice_ = layout.WORKLOAD["slice"]
            node.check(
                f"systemctl kill -s KILL {WORKER_UNIT} {slice_} && systemctl stop {WORKER_UNIT} {slice_}"
            )
            # A task whose worker died fails by heartbeat timeout, then retries.
            run = instance.wait_run(INFLIGHT_DAG, run_id, max(instance.run_timeout, 1500.0))
        finally:
            node.check(f"systemctl start {WORKER_UNIT}")
    retried = next(t for t in run.get("task_instances") or [] if t["task_id"] == first["task_id"])
    assert run["state"] == "success" and retried["hostname"] != first["hostname"], expect(
        f"{first['task_id']} (on {first['hostname']} when its worker was killed) retried elsewhere,"
        " and the run ok",
        instance.run_summary(run) + f"; {first['task_id']} last ran on {retried.get('hostname')}",
        "[scheduler] task_instance_heartbeat_timeout",
    )


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_after_a_controller_reboot_the_workers_reconnect(
    instance: Instance, workers: list[Instance], bundle_fanout: None
) -> None:
    instance.reboot()
    state = instance.wait_healthy(instance.recovery_timeout + 120)
    assert state["healthy"], instance.health_message(state, "healthy after the controller's reboot")
    n = _concurrency(workers[0]) * len(workers)
    run_id = instance.trigger(FANOUT_DAG, {"n": n, "seconds": 2})
    run = instance.wait_run(FANOUT_DAG, run_id)
    hosts = {t.get("hostname") for t in run.get("task_instances") or [] if t["task_id"] == "sleeper"}
    assert run["state"] == "success" and len(hosts) == len(workers), expect(
        f"a run on every worker again after the controller came back ({len(workers)} workers)",
        f"{instance.run_summary(run)}; hosts {sorted(h or '?' for h in hosts)}",
        journal(WORKER_UNIT),
    )


QUEUE_DEPTH = f"""
import sys
sys.path.insert(0, {layout.CODE_DIR!r})
from provisioning.running.metrics import broker_of, broker_url, queue_depth
print(queue_depth(**broker_of(broker_url())))
"""


# Celery's account on the broker: a set written by two commands in a MULTI/EXEC block, as kombu
# writes a queue's binding ("write"; Redis logs a block of one write as that write alone), or
# how many members it has, then removed ("read").
TRANSACTED = f"""
import socket, sys
sys.path.insert(0, {layout.CODE_DIR!r})
from provisioning.running.metrics import _resp_command, broker_of, broker_url
broker, (key, step) = broker_of(broker_url()), sys.argv[1:]
commands = [("AUTH", broker["user"], broker["password"])]
if step == "write":
    commands += [("MULTI",), ("SADD", key, "binding"), ("SADD", key, "deadline"), ("EXEC",)]
else:
    commands += [("SCARD", key), ("DEL", key)]
with socket.create_connection((broker["host"], broker["port"]), timeout=10) as sock:
    sock.sendall(b"".join(_resp_command(*c) for c in commands))
    stream = sock.makefile("rb")
    print(" ".join(stream.readline().decode().strip() for _ in commands))
"""
TRANSACTED_KEY = "airflow-ami-testinfra:transacted"


def broker_transaction(controller: Instance, step: str) -> str:
    script = f"python3 -c {shlex.quote(TRANSACTED)} {TRANSACTED_KEY} {step}"
    return controller.check(script).strip()


def broker_queue_depth(controller: Instance) -> int:
    """How many messages wait in the broker's default queue (read on the controller, as root)."""
    return int(controller.check(f"python3 -c {shlex.quote(QUEUE_DEPTH)}").strip())


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_broker_restart_keeps_every_queued_task(
    instance: Instance, workers: list[Instance], bundle_fanout: None
) -> None:
    """Redis keeps its queue in an append-only file: tasks waiting in it while Redis restarts
    each run once and succeed (a run's first task, queued while no worker is up); so do the
    writes kombu makes in MULTI/EXEC blocks (its queues' bindings)."""
    n, redis_unit = 3, instance.settings["os_facts"]["redis_unit"]
    written = broker_transaction(instance, "write")
    for node in workers:
        node.check(f"systemctl stop {WORKER_UNIT}")
    try:
        run_ids = [instance.trigger(FANOUT_DAG, {"n": 1, "seconds": 1}) for _ in range(n)]
        deadline = time.monotonic() + 300
        while (depth := broker_queue_depth(instance)) < n and time.monotonic() < deadline:
            time.sleep(2)
        assert depth >= n, expect(f"{n} tasks waiting in the broker with no worker up", depth, "")
        instance.check(f"systemctl restart {redis_unit}")
        kept = broker_queue_depth(instance)
        transacted = broker_transaction(instance, "read")
    finally:
        for node in workers:
            node.check(f"systemctl start {WORKER_UNIT}")
    assert transacted == "+OK :2 :1", expect(
        "a set written in a MULTI/EXEC block kept through the broker's restart (replies +OK :2 :1)",
        f"written: {written!r}, after the restart: {transacted!r}",
        f"the default user's permissions in {layout.REDIS_CONF}; {journal(redis_unit)}",
    )
    runs = [instance.wait_run(FANOUT_DAG, run_id) for run_id in run_ids]
    tries = {(t["state"], t.get("try_number")) for run in runs for t in run.get("task_instances") or []}
    assert kept >= n and {r["state"] for r in runs} == {"success"} and tries == {("success", 1)}, expect(
        f"the {n} queued tasks still in the broker after its restart, each run once and succeeded",
        f"{kept} queued after the restart; " + "; ".join(instance.run_summary(r) for r in runs),
        f"{layout.REDIS_CONF} (appendonly); {journal(redis_unit)}",
    )
