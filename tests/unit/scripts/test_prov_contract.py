"""The contract of host and instance: the user-data document (standalone by default, one clear
line for anything wrong) and settings.json (every key present, or refused naming the missing)."""

import json

import pytest
from provisioning.shared import contract
from provisioning.shared.contract import STANDALONE, BadUserData, Role, parse_user_data

DAGS = "s3://airflow-dags/analytics"
WORKER = {"role": "worker", "cluster": "analytics", "controller": "10.0.1.5", "dags_s3_uri": DAGS}


@pytest.mark.parametrize("text", [None, "", "   ", "#!/bin/bash\necho hi\n", "#cloud-config\npackages: []\n"])
def test_no_document_of_ours_means_standalone(text):
    assert parse_user_data(text) == STANDALONE


def test_a_controller_and_a_worker():
    controller = {"role": "controller", "cluster": "analytics", "dags_s3_uri": DAGS}
    assert parse_user_data(json.dumps(controller)) == Role(
        "controller",
        "analytics",
        None,
        DAGS,
        None,
        ("default",),
        "analytics",
        None,
        None,
        None,
        None,
        None,
        None,
    )
    doc = {**WORKER, "worker_concurrency": 8, "worker_queues": ["default", "heavy"]}
    assert parse_user_data(json.dumps(doc)) == Role(
        "worker",
        "analytics",
        "10.0.1.5",
        DAGS,
        8,
        ("default", "heavy"),
        "analytics",
        None,
        None,
        None,
        None,
        None,
        None,
    )
    scaled = {**WORKER, "autoscaling_group": "airflow-ami-analytics", "lifecycle_hook": "airflow-ami-drain"}
    role = parse_user_data(json.dumps({**scaled, "task_logs_s3_uri": "s3://logs/analytics"}))
    assert (role.autoscaling_group, role.lifecycle_hook, role.task_logs_s3_uri) == (
        "airflow-ami-analytics",
        "airflow-ami-drain",
        "s3://logs/analytics",
    )
    assert parse_user_data(json.dumps({**WORKER, "controller": "ip-10-0-1-5.ec2.internal"})).controller


BAD = [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "a JSON object"),
    (json.dumps({"role": "scheduler"}), "user data role"),
    (json.dumps({"role": "worker", "controller": "10.0.1.5"}), "user data cluster"),
    (json.dumps({**WORKER, "dags_s3_uri": None}), "dags_s3_uri"),
    (json.dumps({**WORKER, "dags_s3_uri": "https://bucket/dags"}), "dags_s3_uri"),
    (json.dumps({"role": "controller", "cluster": "Analytics"}), "user data cluster"),
    (json.dumps({"role": "controller", "cluster": "a" * 41}), "user data cluster"),
    (json.dumps({"role": "worker", "cluster": "c"}), "user data controller"),
    (json.dumps({**WORKER, "controller": "10.0.1.5; rm -rf /"}), "user data controller"),
    (json.dumps({**WORKER, "worker_concurrency": 0}), "worker_concurrency"),
    (json.dumps({**WORKER, "autoscaling_group": "g"}), "together with lifecycle_hook"),
    (json.dumps({**WORKER, "autoscaling_group": "g h", "lifecycle_hook": "x"}), "autoscaling_group"),
    (
        json.dumps({"role": "controller", "cluster": "c", "dags_s3_uri": DAGS, "lifecycle_hook": "x"}),
        "only for a worker",
    ),
    (json.dumps({"role": "standalone", "task_logs_s3_uri": "/var/log"}), "task_logs_s3_uri"),
    (json.dumps({**WORKER, "worker_concurrency": 1000}), "worker_concurrency"),
    (json.dumps({**WORKER, "worker_concurrency": True}), "worker_concurrency"),
    (json.dumps({**WORKER, "worker_concurrency": "8"}), "worker_concurrency"),
    (json.dumps({**WORKER, "worker_queues": []}), "worker_queues"),
    (json.dumps({**WORKER, "worker_queues": "default"}), "worker_queues"),
    (json.dumps({**WORKER, "worker_queues": ["a b"]}), "worker_queues"),
    (json.dumps({**WORKER, "password": "x"}), "'password'"),
    (
        json.dumps({"role": "controller", "cluster": "c", "dags_s3_uri": DAGS, "controller": "10.0.0.1"}),
        "only for a worker",
    ),
    (
        json.dumps({"role": "controller", "cluster": "c", "dags_s3_uri": DAGS, "worker_concurrency": 4}),
        "only for a worker",
    ),
    (json.dumps({"role": "standalone", "cluster": "c"}), "only for a controller or a worker"),
    # What outlives instances: a deployment, its backups, a restore.
    (json.dumps({"role": "standalone", "deployment": "Prod"}), "user data deployment"),
    (
        json.dumps({"role": "controller", "cluster": "c", "dags_s3_uri": DAGS, "deployment": "d"}),
        "a cluster is",
    ),
    (json.dumps({"role": "standalone", "restore": "latest"}), "latest only with a deployment"),
    (json.dumps({"role": "standalone", "restore": "s3://b/dump.sql"}), "user data restore"),
    (json.dumps({"role": "standalone", "backup_interval_minutes": 1}), "backup_interval_minutes"),
    (json.dumps({"role": "standalone", "backup_s3_uri": "/var/backups"}), "backup_s3_uri"),
    (json.dumps({**WORKER, "restore": "latest"}), "only for the instance holding the database"),
]


@pytest.mark.parametrize(("text", "named"), BAD)
def test_bad_user_data_is_one_line_naming_what_is_wrong(text, named):
    with pytest.raises(BadUserData) as info:
        parse_user_data(text)
    message = str(info.value)
    assert named in message and "\n" not in message and "Scaling out" in message


def test_the_document_both_clouds_write_is_the_one_first_boot_reads():
    assert contract.user_data("standalone") == ""
    controller = contract.user_data(
        "controller", cluster="analytics", dags_s3_uri=DAGS, backup_interval_minutes=30
    )
    assert parse_user_data(controller) == Role(
        "controller",
        "analytics",
        None,
        DAGS,
        None,
        ("default",),
        "analytics",
        None,
        30,
        None,
        None,
        None,
        None,
    )
    worker = contract.user_data(
        "worker",
        cluster="analytics",
        dags_s3_uri=DAGS,
        controller="10.0.1.5",
        worker_concurrency=4,
        task_logs_s3_uri="s3://logs/a",
        autoscaling_group="airflow-ami-analytics",
        lifecycle_hook=contract.LIFECYCLE_HOOK,
    )
    assert parse_user_data(worker) == Role(
        "worker",
        "analytics",
        "10.0.1.5",
        DAGS,
        4,
        ("default",),
        "analytics",
        None,
        None,
        None,
        "s3://logs/a",
        "airflow-ami-analytics",
        contract.LIFECYCLE_HOOK,
    )
    named = contract.user_data(
        "standalone", deployment="prod", restore="latest", backup_s3_uri="s3://backups/p"
    )
    assert parse_user_data(named) == STANDALONE._replace(
        deployment="prod", backup_s3_uri="s3://backups/p", restore="latest"
    )


def test_settings_json_lacking_a_key_is_refused_naming_every_missing_one(tmp_path):
    document = {key: "" for key in contract.SETTINGS}
    document["os_facts"] = dict.fromkeys(contract.OS_FACTS, "x")
    del document["api_port"], document["os_facts"]["mysql_socket"]
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(document))
    with pytest.raises(contract.SettingsMissing) as missing:
        contract.read_settings(str(path))
    assert str(missing.value).startswith("settings.json lacks api_port, os_facts.mysql_socket: ")
    document["api_port"] = 8080
    document["os_facts"]["mysql_socket"] = "/run/mysqld/mysqld.sock"
    path.write_text(json.dumps(document))
    settings = contract.read_settings(str(path))
    with pytest.raises(contract.SettingsMissing, match="lacks no_such_key"):
        settings["no_such_key"]
