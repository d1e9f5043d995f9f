"""A named deployment's secrets outlive its instances: made once by its first instance,
taken by every later one, never overwritten implicitly."""

import json

import pytest
from provfakes import RecordingContext
from provisioning.boot import cluster, deployment, firstboot
from provisioning.shared import contract, layout
from provisioning.shared.contract import parse_user_data
from provisioning.shared.runner import StepFailed

DAGS = "s3://airflow-dags/analytics"
CONTROLLER = parse_user_data(json.dumps({"role": "controller", "cluster": "analytics", "dags_s3_uri": DAGS}))
WORKER = parse_user_data(
    json.dumps({"role": "worker", "cluster": "analytics", "controller": "10.0.1.5", "dags_s3_uri": DAGS})
)
NAMED = parse_user_data(json.dumps({"role": "standalone", "deployment": "prod"}))
STORED = {
    "fernet_keys": ["F" * 44, "O" * 44],
    "jwt_secret": "J" * 64,
    "api_secret_key": "A" * 64,
    "admin_password": "P" * 24,
    "broker_password": "B" * 32,
}


class FakeImds:
    def role_credentials(self):
        return {"access_key": "AK", "secret_key": "SK", "token": "TOKEN"}


class Store:
    """SSM in memory: name -> text; `failures` answers the next reads with an error."""

    def __init__(self):
        self.documents = {}
        self.failures = 0
        self.reads = 0
        self.read_names = []

    def get(self, name, region, creds, endpoint=None):
        self.reads += 1
        self.read_names.append(name)
        if self.failures:
            self.failures -= 1
            raise OSError("ssm AmazonSSM.GetParameter: HTTP 500 InternalServerError")
        return self.documents.get(name)

    def create(self, name, value, region, creds, endpoint=None):
        if name in self.documents:
            return False
        self.documents[name] = value
        return True

    def put(self, name, value, region, creds, endpoint=None):
        self.documents[name] = value

    def secrets(self, name):
        return json.loads(self.documents[contract.deployment_secret_name("ssm", name)])


def store_in_place_of_ssm(monkeypatch):
    """A Store that the deployment module reads and writes instead of SSM, with no backoff."""
    fake = Store()
    monkeypatch.setattr(deployment, "get_ssm_parameter", fake.get)
    monkeypatch.setattr(deployment, "create_ssm_parameter", fake.create)
    monkeypatch.setattr(deployment, "put_ssm_parameter", fake.put)
    monkeypatch.setattr(deployment, "FIRST_DELAY", 0)
    return fake


@pytest.fixture
def store(monkeypatch):
    monkeypatch.setattr(firstboot, "SHARED_SECRETS_PATIENCE", 0)
    return store_in_place_of_ssm(monkeypatch)


def booted(role, existing=None, mode="complete"):
    ctx = RecordingContext({"secret_store": "ssm"}, state=firstboot.FirstbootState())
    ctx.state.role, ctx.state.imds, ctx.state.mode = role, FakeImds(), mode
    ctx.state.region, ctx.state.private_ip = "us-east-1", "10.0.1.9"
    ctx.state.existing = dict(existing or {})
    return ctx


def first_boot_secrets(ctx):
    firstboot.fetch_deployment_secrets(ctx)
    firstboot.generate_secrets(ctx)
    firstboot.publish_deployment_secrets(ctx)
    return ctx.state.generated


def test_the_first_instance_of_a_deployment_stores_what_the_next_one_takes(store):
    first = first_boot_secrets(booted(NAMED))
    stored = store.secrets("prod")
    assert stored["fernet_keys"] == [first["fernet_key"]]
    assert {k: stored[k] for k in deployment.DEPLOYMENT_SECRETS} == {
        k: first[k] for k in deployment.DEPLOYMENT_SECRETS
    }
    second = first_boot_secrets(booted(NAMED))
    shared = ("fernet_key", *deployment.DEPLOYMENT_SECRETS)
    assert {k: second[k] for k in shared} == {k: first[k] for k in shared}
    assert second["db_password"] != first["db_password"], "the database account stays per instance"


def test_an_unnamed_instance_keeps_its_secrets_to_itself(store):
    first_boot_secrets(booted(firstboot.STANDALONE))
    assert store.documents == {} and store.reads == 0


def test_a_read_that_fails_otherwise_than_not_found_is_retried_then_fails_making_nothing(store):
    store.documents[contract.deployment_secret_name("ssm", "prod")] = json.dumps(STORED)
    store.failures = 2
    ctx = booted(NAMED)
    firstboot.fetch_deployment_secrets(ctx)  # two 500s, then the document
    assert ctx.state.existing["fernet_key"] == "F" * 44 and store.reads == 3
    store.failures = deployment.READ_ATTEMPTS
    ctx = booted(NAMED)
    with pytest.raises(deployment.StoreUnreachable, match="never makes new secrets"):
        first_boot_secrets(ctx)
    assert ctx.state.generated == {} and json.loads(json.dumps(store.secrets("prod"))) == STORED


def test_a_controller_that_cannot_read_the_store_never_overwrites_it(store):
    name = contract.deployment_secret_name("ssm", "analytics")
    store.documents[name] = json.dumps(STORED)
    store.failures = deployment.READ_ATTEMPTS
    with pytest.raises(deployment.StoreUnreachable):
        first_boot_secrets(booted(CONTROLLER))
    assert store.secrets("analytics") == STORED


def test_an_image_of_a_used_controller_keeps_the_deployment_s_secrets(store):
    """A new identity (rotate) renews what is per instance, never what the store holds."""
    store.documents[contract.deployment_secret_name("ssm", "analytics")] = json.dumps(STORED)
    on_disk = {"fernet_key": "F" * 44, "jwt_secret": "J" * 64, "db_password": "D" * 32}
    generated = first_boot_secrets(booted(CONTROLLER, existing=on_disk, mode="rotate"))
    assert generated["fernet_key"] == "F" * 44 and generated["broker_password"] == "B" * 32
    assert generated["admin_password"] == "P" * 24 and generated["db_password"] != "D" * 32
    assert store.secrets("analytics") == STORED
    ctx = booted(CONTROLLER, existing=on_disk, mode="rotate")
    first_boot_secrets(ctx)
    assert ctx.state.old_fernet_keys == ["O" * 44], "the store's old key stays until a rotation drops it"
    assert firstboot.reencrypt_with_the_new_fernet_key(ctx) == "skipped"


WORKER_STORED = {k: STORED[k] for k in cluster.ROLE_SECRETS["worker"]}


def test_an_image_of_a_used_worker_takes_its_cluster_s_secrets_and_makes_none(store):
    store.documents[contract.deployment_secret_name("ssm", "analytics")] = json.dumps(STORED)
    store.documents[contract.deployment_worker_secret_name("ssm", "analytics")] = json.dumps(WORKER_STORED)
    stale = {
        "fernet_key": "X" * 44,
        "jwt_secret": "Y" * 64,
        "api_secret_key": "Z" * 64,
        "broker_password": "W" * 32,
    }
    ctx = booted(WORKER, existing=stale, mode="rotate")
    generated = first_boot_secrets(ctx)
    # Only what a worker needs: no fernet key, no JWT secret, even those its image kept.
    assert generated == {k: STORED[k] for k in ("api_secret_key", "broker_password")}
    assert store.secrets("analytics") == STORED
    firstboot.write_secrets_env(ctx)
    env = ctx.written[layout.SECRETS_ENV]
    env = env.decode() if isinstance(env, bytes) else env
    assert "SQL_ALCHEMY_CONN" not in env and "FERNET_KEY" not in env and "JWT_SECRET" not in env
    assert f"AIRFLOW__API__SECRET_KEY='{STORED['api_secret_key']}'" in env and "BROKER_URL" in env


def test_a_worker_waits_for_its_controller_and_says_so(store):
    with pytest.raises(firstboot.StepFailed, match="no secrets of cluster analytics"):
        first_boot_secrets(booted(WORKER))


def test_of_two_first_instances_the_slower_stops_and_adopts_at_its_next_boot(store):
    quick, slow = booted(NAMED), booted(NAMED)
    firstboot.fetch_deployment_secrets(slow)
    first_boot_secrets(quick)
    firstboot.generate_secrets(slow)
    with pytest.raises(firstboot.StepFailed, match="stored its secrets first"):
        firstboot.publish_deployment_secrets(slow)
    again = first_boot_secrets(booted(NAMED))
    assert again["fernet_key"] == quick.state.generated["fernet_key"]


def test_a_worker_reads_only_the_workers_document_which_its_controller_writes(store):
    controller = first_boot_secrets(booted(CONTROLLER))
    workers = json.loads(store.documents[contract.deployment_worker_secret_name("ssm", "analytics")])
    assert workers == {k: controller[k] for k in cluster.ROLE_SECRETS["worker"]}
    store.read_names.clear()
    held = first_boot_secrets(booted(WORKER))
    assert held == workers
    assert store.read_names == [contract.deployment_worker_secret_name("ssm", "analytics")]


def test_the_controller_says_where_it_is(store):
    first_boot_secrets(booted(CONTROLLER))
    controller = store.documents[contract.deployment_controller_name("ssm", "analytics")]
    assert json.loads(controller) == {"address": "10.0.1.9"}
    assert set(store.secrets("analytics")) == {"fernet_keys", *deployment.CLUSTER_SECRETS}
    assert set(cluster.ROLE_SECRETS["controller"]) <= {
        "db_password",
        "fernet_key",
        *deployment.CLUSTER_SECRETS,
    }


def test_first_boot_restores_the_asked_dump_once(tmp_path, monkeypatch):
    monkeypatch.setattr(layout, "RESTORED_RECORD", str(tmp_path / "restored.json"))
    restored = []
    monkeypatch.setattr(
        firstboot.backup,
        "restore",
        lambda ctx, source, manage_services: restored.append((source, manage_services)) or 0,
    )
    role = NAMED._replace(restore="latest")
    assert firstboot.restore_requested_dump(booted(role)) is None
    assert restored == [("latest", False)], "before any Airflow service: nothing to stop or start"
    (tmp_path / "restored.json").write_text(json.dumps({"source": "latest", "time": "then"}))
    assert firstboot.restore_requested_dump(booted(role)) == "skipped" and len(restored) == 1
    assert firstboot.restore_requested_dump(booted(NAMED)) == "skipped"


def test_a_failed_restore_leaves_no_airflow_service_able_to_start(tmp_path, monkeypatch):
    monkeypatch.setattr(layout, "RESTORED_RECORD", str(tmp_path / "restored.json"))
    monkeypatch.setattr(firstboot.backup, "restore", lambda ctx, source, manage_services: 1)
    ctx = booted(NAMED._replace(restore="latest"))
    with pytest.raises(StepFailed, match="no Airflow service starts"):
        firstboot.restore_requested_dump(ctx)
    assert layout.SECRETS_ENV in ctx.removed, "the units' secrets.env withdrawn: they cannot start"


def test_the_launch_s_backup_choices_win_over_the_bake_s(tmp_path, monkeypatch):
    monkeypatch.setattr(layout, "DEPLOYMENT_RECORD", str(tmp_path / "deployment.json"))
    ctx = booted(
        NAMED._replace(backup_s3_uri="s3://chosen/p", backup_interval_minutes=15, task_logs_s3_uri="s3://l/t")
    )
    firstboot.write_deployment_record(ctx)
    assert json.loads(ctx.written[layout.DEPLOYMENT_RECORD]) == {
        "deployment": "prod",
        "backup_s3_uri": "s3://chosen/p",
        "backup_interval_minutes": 15,
        "task_logs_s3_uri": "s3://l/t",
    }
    ctx = booted(NAMED)
    firstboot.write_deployment_record(ctx)
    baked = json.loads(ctx.written[layout.DEPLOYMENT_RECORD])
    assert (baked["backup_s3_uri"], baked["backup_interval_minutes"]) == (
        ctx.settings["backup_s3_uri"],
        ctx.settings["backup_interval_minutes"],
    )
    assert firstboot.write_deployment_record(booted(WORKER)) == "skipped"
