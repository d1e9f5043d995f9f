"""A cluster's first boot: the role decides what is made, shared, written and run."""

import json

import pytest
from provfakes import RecordingContext
from provisioning.boot import cluster, firstboot
from provisioning.shared import layout
from provisioning.shared.contract import parse_user_data

DAGS = "s3://airflow-dags/analytics"
CONTROLLER = parse_user_data(json.dumps({"role": "controller", "cluster": "analytics", "dags_s3_uri": DAGS}))
WORKER = parse_user_data(
    json.dumps(
        {
            "role": "worker",
            "cluster": "analytics",
            "controller": "10.0.1.5",
            "dags_s3_uri": DAGS,
            "worker_concurrency": 6,
            "worker_queues": ["default", "heavy"],
        }
    )
)
SHARED = {
    "fernet_key": "F" * 44,
    "jwt_secret": "J" * 64,
    "api_secret_key": "A" * 64,
    "broker_password": "B" * 32,
}


class FakeImds:
    def role_credentials(self):
        return {"access_key": "AK", "secret_key": "SK", "token": "TOKEN"}


@pytest.fixture
def store(monkeypatch):
    """The cluster's secret store, in memory: name -> document."""
    documents = {}

    def read(store_kind, name, region, creds, endpoint=None):
        text = documents.get(cluster.secret_name(store_kind, name))
        return json.loads(text) if text else None

    def write(store_kind, name, secrets, region, creds, *, endpoint=None):
        documents[cluster.secret_name(store_kind, name)] = json.dumps(
            {k: secrets[k] for k in cluster.SHARED_SECRETS}
        )

    monkeypatch.setattr(firstboot, "read_shared", read)
    monkeypatch.setattr(firstboot, "store_shared", write)
    monkeypatch.setattr(firstboot, "SHARED_SECRETS_PATIENCE", 0)
    return documents


def booted(role, existing=None):
    ctx = RecordingContext({"cluster_secret_store": "ssm"}, state=firstboot.FirstbootState())
    ctx.state.role, ctx.state.imds, ctx.state.mode = role, FakeImds(), "complete"
    ctx.state.existing = dict(existing or {})
    return ctx


def test_the_controller_makes_and_stores_what_its_workers_need(store):
    ctx = booted(CONTROLLER)
    firstboot.fetch_cluster_secrets(ctx)
    firstboot.generate_secrets(ctx)
    firstboot.publish_cluster_secrets(ctx)
    stored = json.loads(store["/airflow-ami/analytics/shared-secrets"])
    assert stored == {name: ctx.state.generated[name] for name in cluster.SHARED_SECRETS}
    assert set(ctx.state.generated) == set(cluster.ROLE_SECRETS["controller"])
    assert "TOKEN" in ctx.secrets and "SK" in ctx.secrets


def test_a_worker_holds_its_controllers_secrets_and_no_database_or_admin(store):
    store["/airflow-ami/analytics/shared-secrets"] = json.dumps(SHARED)
    ctx = booted(WORKER)
    firstboot.fetch_cluster_secrets(ctx)
    firstboot.generate_secrets(ctx)
    assert ctx.state.generated == SHARED
    firstboot.write_secrets_env(ctx)
    env = ctx.written[layout.SECRETS_ENV]
    env = env.decode() if isinstance(env, bytes) else env
    assert "SQL_ALCHEMY_CONN" not in env
    assert f"AIRFLOW__CELERY__BROKER_URL='redis://:{SHARED['broker_password']}@10.0.1.5:6379/0'" in env
    assert firstboot.on_the_database_node(firstboot.update_airflow_database)(ctx) == "skipped"


def test_a_worker_without_its_controllers_secrets_fails_saying_so(store):
    with pytest.raises(firstboot.StepFailed, match="no shared secrets for cluster analytics"):
        firstboot.fetch_cluster_secrets(booted(WORKER))


def test_a_worker_that_cannot_reach_the_store_keeps_the_secrets_it_has(store):
    ctx = booted(WORKER, existing=SHARED)
    assert firstboot.fetch_cluster_secrets(ctx) is None
    assert ctx.state.existing == SHARED


def test_role_env_of_a_worker_points_it_at_the_controller():
    env = cluster.role_env(WORKER, 8080)
    assert "AIRFLOW__CORE__EXECUTOR='CeleryExecutor'" in env
    assert "AIRFLOW__CORE__EXECUTION_API_SERVER_URL='http://10.0.1.5:8080/execution/'" in env
    assert "AIRFLOW_AMI_WORKER_QUEUES='default,heavy'" in env
    assert "AIRFLOW__CELERY__WORKER_CONCURRENCY='6'" in env
    assert '"bucket_name": "airflow-dags"' in env and '"prefix": "analytics"' in env
    assert cluster.role_env(firstboot.STANDALONE, 8080).count("\n") == 1


def test_the_broker_listens_on_the_private_address_with_a_password():
    conf = cluster.redis_conf("B" * 32, "10.0.1.5", "redis")
    assert "bind 127.0.0.1 10.0.1.5\n" in conf and "requirepass " + "B" * 32 in conf
    assert "protected-mode yes\n" in conf


def test_bad_user_data_stops_first_boot_with_its_own_exit_status():
    class Imds:
        def get(self, path):
            return '{"role": "worker"}'

    ctx = booted(firstboot.STANDALONE)
    ctx.state.imds, ctx.state.identity_known = Imds(), True
    with pytest.raises(firstboot.StepFailed) as info:
        firstboot.read_role(ctx)
    assert info.value.exit_status == layout.BAD_USER_DATA_EXIT and "user data cluster" in str(info.value)
