"""A running node of a named deployment takes its store's secrets (and a worker its
controller's address) when they changed, and restarts only then; a fernet key rotation
puts the new key first, then re-encrypts and drops the old one."""

import json

import pytest
from provfakes import baked_settings, profile_facts
from provisioning.boot import cluster, deployment, firstboot
from provisioning.running import secrets
from provisioning.shared import contract, layout
from provisioning.shared.envfile import read_env_file
from provisioning.shared.runner import Context
from test_prov_deployment import STORED, store_in_place_of_ssm

DAGS = "s3://airflow-dags/analytics"


class Node(Context):
    """A real Context on a temporary tree, recording systemctl and airflow instead of running them."""

    def __init__(self):
        super().__init__(baked_settings(secret_store="ssm"), None, False, None, facts=profile_facts("debian"))
        self.commands = []

    def run(self, argv, input_text=None, **kw):
        self.commands.append(list(argv))
        return 0, ""

    def probe(self, argv, **kw):
        return 0, ""  # every unit is active


def fake_imds(monkeypatch, user_data):
    class Imds:
        def __init__(self, *args, **kw):
            pass

        def get(self, path):
            return {
                "dynamic/instance-identity/document": json.dumps(
                    {"instanceId": "i-1", "region": "us-east-1", "privateIp": "10.0.1.9"}
                ),
                "user-data": json.dumps(user_data),
            }.get(path)

        def role_credentials(self):
            return {"access_key": "AK", "secret_key": "SK", "token": "T"}

    monkeypatch.setattr(firstboot, "Imds", Imds)


@pytest.fixture
def tree(tmp_path, monkeypatch):
    for name in ("SECRETS_ENV", "ROLE_ENV", "ADMIN_PASSWORD_FILE", "FIRSTBOOT_MARKER"):
        monkeypatch.setattr(layout, name, str(tmp_path / name.lower()))
    monkeypatch.setattr(layout, "ROLE_DIR", str(tmp_path / "role"))
    return tmp_path


@pytest.fixture
def store(monkeypatch):
    fake = store_in_place_of_ssm(monkeypatch)
    fake.documents[contract.deployment_secret_name("ssm", "prod")] = json.dumps(STORED)
    fake.documents[contract.deployment_secret_name("ssm", "analytics")] = json.dumps(STORED)
    workers = {k: STORED[k] for k in cluster.ROLE_SECRETS["worker"]}
    fake.documents[contract.deployment_worker_secret_name("ssm", "analytics")] = json.dumps(workers)
    return fake


def restarts(node):
    return [c for c in node.commands if c[:2] == ["systemctl", "try-restart"]]


def test_a_node_takes_the_store_s_new_secrets_and_restarts_only_then(tree, store, monkeypatch):
    fake_imds(monkeypatch, {"role": "standalone", "deployment": "prod"})
    (tree / "secrets_env").write_text(
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN='mysql+mysqldb://airflow:dbpass@localhost/airflow'\n"
        f"AIRFLOW__CORE__FERNET_KEY='{'X' * 44}'\n"
    )
    node = Node()
    assert secrets.refresh(node) == 0
    env = read_env_file(layout.SECRETS_ENV)
    assert env["AIRFLOW__CORE__FERNET_KEY"] == ",".join(STORED["fernet_keys"])
    assert (
        env["AIRFLOW__API_AUTH__JWT_SECRET"] == STORED["jwt_secret"]
        and "dbpass" in env[firstboot.DB_URL_VARIABLE]
    )
    assert (tree / "admin_password_file").read_text().strip() == STORED["admin_password"]
    assert restarts(node) and set(restarts(node)[0][2:]) == set(layout.SERVICE_UNITS)
    again = Node()
    assert secrets.refresh(again) == 0 and restarts(again) == [], "as the store holds them: no restart"


def test_a_worker_follows_its_controller_to_its_new_address(tree, store, monkeypatch):
    fake_imds(
        monkeypatch, {"role": "worker", "cluster": "analytics", "controller": "10.0.1.5", "dags_s3_uri": DAGS}
    )
    deployment.put_controller(deployment.Store("ssm", "us-east-1", {}, None), "analytics", "10.0.7.7")
    node = Node()
    assert secrets.refresh(node) == 0
    assert "http://10.0.7.7:8080/execution/" in (tree / "role_env").read_text()
    assert "@10.0.7.7:6379/0" in read_env_file(layout.SECRETS_ENV)["AIRFLOW__CELERY__BROKER_URL"]
    assert restarts(node)


def test_an_instance_of_its_own_has_nothing_to_refresh(tree, store, monkeypatch):
    fake_imds(monkeypatch, {"role": "standalone"})
    node = Node()
    assert secrets.refresh(node) == 0 and node.commands == [] and store.reads == 0


def test_a_rotation_puts_the_new_key_first_then_re_encrypts_and_drops_the_old(tree, store, monkeypatch):
    fake_imds(monkeypatch, {"role": "standalone", "deployment": "prod"})
    assert secrets.rotate_fernet_key(Node(), "begin") == 0
    keys = store.secrets("prod")["fernet_keys"]
    assert len(keys) == 3 and keys[1:] == STORED["fernet_keys"]
    assert read_env_file(layout.SECRETS_ENV)["AIRFLOW__CORE__FERNET_KEY"] == ",".join(keys)
    finishing = Node()
    assert secrets.rotate_fernet_key(finishing, "finish") == 0
    assert [layout.AIRFLOW_BIN, "rotate-fernet-key"] in finishing.commands
    assert store.secrets("prod")["fernet_keys"] == keys[:1]
    assert read_env_file(layout.SECRETS_ENV)["AIRFLOW__CORE__FERNET_KEY"] == keys[0]
    assert {k: v for k, v in store.secrets("prod").items() if k != "fernet_keys"} == {
        k: v for k, v in STORED.items() if k != "fernet_keys"
    }


def test_a_controller_says_again_that_it_is_the_cluster_s(tree, store, monkeypatch):
    fake_imds(monkeypatch, {"role": "controller", "cluster": "analytics", "dags_s3_uri": DAGS})
    deployment.put_controller(deployment.Store("ssm", "us-east-1", {}, None), "analytics", "10.0.7.7")
    assert secrets.publish_controller(Node()) == 0
    name = contract.deployment_controller_name("ssm", "analytics")
    assert json.loads(store.documents[name]) == {"address": "10.0.1.9"}
