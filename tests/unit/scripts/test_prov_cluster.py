"""A cluster's first boot: the role decides what runs and with what (its secrets: test_prov_deployment)."""

import hashlib
import json

import pytest
from provfakes import RecordingContext
from provisioning.boot import cluster, firstboot
from provisioning.shared import contract, layout
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


class FakeImds:
    def role_credentials(self):
        return {"access_key": "AK", "secret_key": "SK", "token": "TOKEN"}


def booted(role, existing=None, task_logs_s3_uri=""):
    settings = {"secret_store": "ssm", "task_logs_s3_uri": task_logs_s3_uri}
    ctx = RecordingContext(settings, state=firstboot.FirstbootState())
    ctx.state.role, ctx.state.imds, ctx.state.mode = role, FakeImds(), "complete"
    ctx.state.existing = dict(existing or {})
    return ctx


def test_role_env_of_a_worker_points_it_at_the_controller():
    env = cluster.role_env(WORKER, 8080, "")
    assert "AIRFLOW__CORE__EXECUTOR='CeleryExecutor'" in env
    assert "AIRFLOW__CORE__EXECUTION_API_SERVER_URL='http://10.0.1.5:8080/execution/'" in env
    assert "AIRFLOW_AMI_WORKER_QUEUES='default,heavy'" in env
    assert "AIRFLOW__CELERY__WORKER_CONCURRENCY='6'" in env
    assert '"bucket_name": "airflow-dags"' in env and '"prefix": "analytics"' in env
    assert "REMOTE_LOGGING" not in env
    assert cluster.role_env(firstboot.STANDALONE, 8080, "").count("\n") == 1


@pytest.mark.parametrize("role", [firstboot.STANDALONE, WORKER, CONTROLLER], ids=lambda r: r.role)
def test_task_logs_go_to_s3_with_the_instance_role_on_every_role(role):
    env = cluster.role_env(role, 8080, "s3://logs-bucket/task-logs/analytics/")
    assert "AIRFLOW__LOGGING__REMOTE_LOGGING='True'" in env
    assert "AIRFLOW__LOGGING__REMOTE_BASE_LOG_FOLDER='s3://logs-bucket/task-logs/analytics'" in env
    assert "AIRFLOW__LOGGING__REMOTE_LOG_CONN_ID='aws_default'" in env
    assert "AIRFLOW__LOGGING__ENCRYPT_S3_LOGS='True'" in env


def test_the_launch_s_task_logs_win_over_the_image_s():
    def where(role, **settings):
        ctx = booted(role, **settings)
        return contract.task_logs_location(ctx.state.role, ctx.settings)

    launch = WORKER._replace(task_logs_s3_uri="s3://launch/logs")
    assert where(launch, task_logs_s3_uri="s3://image/logs") == "s3://launch/logs"
    assert where(WORKER, task_logs_s3_uri="s3://image/logs") == "s3://image/logs"
    assert where(WORKER) == ""


def test_the_broker_listens_on_the_private_address_with_one_account_of_celery_s_commands():
    conf = cluster.redis_conf("B" * 32, "10.0.1.5", "redis", 256)
    assert "bind 127.0.0.1 10.0.1.5\n" in conf and "protected-mode yes\n" in conf
    digest = hashlib.sha256(b"B" * 32).hexdigest()
    users = [line for line in conf.splitlines() if line.startswith("user ")]
    # The default user: off and without a password, with Celery's commands, which Redis checks
    # its append-only file's transactions against when it replays them.
    assert users == [
        "user default off resetpass ~* &* +@all -@dangerous",
        f"user {layout.BROKER_USER} on #{digest} ~* &* +@all -@dangerous",
    ]
    assert "B" * 32 not in conf and "requirepass" not in conf
    assert (
        cluster.redis_url("B" * 32, "10.0.1.5", 0)
        == f"redis://{layout.BROKER_USER}:{'B' * 32}@10.0.1.5:6379/0"
    )


def test_the_broker_keeps_its_queue_on_disk_bounded():
    lines = cluster.redis_conf("B" * 32, "10.0.1.5", "redis", 256).splitlines()
    assert {
        "appendonly yes",
        "appendfsync everysec",
        "maxmemory 256mb",
        "maxmemory-policy noeviction",
    } <= set(lines)
    assert "dir /var/lib/redis" in lines and "auto-aof-rewrite-percentage 100" in lines


def test_bad_user_data_stops_first_boot_with_its_own_exit_status():
    class Imds:
        def get(self, path):
            return '{"role": "worker"}'

    ctx = booted(firstboot.STANDALONE)
    ctx.state.imds, ctx.state.identity_known = Imds(), True
    with pytest.raises(firstboot.StepFailed) as info:
        firstboot.read_role(ctx)
    assert info.value.exit_status == layout.BAD_USER_DATA_EXIT and "user data cluster" in str(info.value)
