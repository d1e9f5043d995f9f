"""A cluster: the controller (--hosts) and its workers (--airflow-ami-worker, repeated).

Selected instead of the single-instance checks when workers are given (conftest.py).
DAGs reach every node through the cluster's S3 DAG bundle: the suite puts its fan-out
DAG there from the controller (with the controller's instance role) and removes it after.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator

import pytest

from .lib import (
    AIRFLOW_VENV_PYTHON,
    DAGS_SRC,
    FANOUT_DAG,
    FIRSTBOOT_MARKER,
    SECRETS_ENV,
    SETTINGS_PATH,
    Instance,
    describe_listener,
    expect,
    journal,
    layout,
    listener_allow_list,
    parse_ts,
    unexpected_listeners,
)

CONTROLLER_UNITS = (
    "airflow-scheduler.service",
    "airflow-dag-processor.service",
    "airflow-api-server.service",
    "airflow-triggerer.service",
)
WORKER_UNIT = "airflow-celery-worker.service"
SHARED = (
    "AIRFLOW__CORE__FERNET_KEY",
    "AIRFLOW__API_AUTH__JWT_SECRET",
    "AIRFLOW__API__SECRET_KEY",
    "AIRFLOW__CELERY__BROKER_URL",
)
# The S3 client of the controller's venv, with its instance role (IMDS) and region.
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


def test_workers_share_the_controllers_secrets_and_hold_no_database_password(
    instance: Instance, workers: list[Instance]
) -> None:
    controller = secret_digests(instance)
    for node in workers:
        theirs = secret_digests(node)
        assert "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN" not in theirs, "a worker holds no database URL"
        differ = [
            name
            for name in SHARED
            if name != "AIRFLOW__CELERY__BROKER_URL" and theirs.get(name) != controller.get(name)
        ]
        assert not differ, expect("the worker's shared secrets equal the controller's", differ, SECRETS_ENV)
        user_data = node.sh("cat /var/lib/cloud/instance/user-data.txt 2>/dev/null").stdout
        assert not any(v in user_data for v in theirs.values()), "no secret in user data"


@pytest.fixture(scope="module")
def bundle_fanout(instance: Instance) -> Iterator[None]:
    """The fan-out DAG in the cluster's S3 bundle, registered on the controller."""
    bundles = json.loads(instance.airflow_config("dag_processor", "dag_bundle_config_list"))
    kwargs = bundles[0]["kwargs"]
    key = "/".join(p for p in (kwargs["prefix"], f"{FANOUT_DAG}.py") if p)
    script = S3_PUT % {"settings": SETTINGS_PATH, "record": FIRSTBOOT_MARKER}
    local = f"/run/{FANOUT_DAG}.py"
    instance.write_file(local, (DAGS_SRC / f"{FANOUT_DAG}.py").read_bytes())
    put = f"{AIRFLOW_VENV_PYTHON} -c {shlex.quote(script)} {kwargs['bucket_name']} {shlex.quote(key)}"
    instance.check(f"{put} {local}")
    instance.airflow(f"dags reserialize --bundle-name {bundles[0]['name']}")
    wait = instance.probe("wait-dag", FANOUT_DAG, "420")
    assert wait["status"] == 200, expect(
        f"{FANOUT_DAG} registered from s3://{kwargs['bucket_name']}/{key}",
        wait,
        journal("airflow-dag-processor.service", 80),
    )
    instance.uploaded_dags.add(FANOUT_DAG)
    yield
    instance.check(put)
    instance.sh(f"rm -f {local}")


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
