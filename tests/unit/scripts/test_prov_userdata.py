"""User data picks the role: standalone by default, one clear line for anything wrong."""

import json

import pytest
from provisioning.userdata import STANDALONE, BadUserData, Role, parse_user_data

DAGS = "s3://airflow-dags/analytics"
WORKER = {"role": "worker", "cluster": "analytics", "controller": "10.0.1.5", "dags_s3_uri": DAGS}


@pytest.mark.parametrize("text", [None, "", "   ", "#!/bin/bash\necho hi\n", "#cloud-config\npackages: []\n"])
def test_no_document_of_ours_means_standalone(text):
    assert parse_user_data(text) == STANDALONE


def test_a_controller_and_a_worker():
    controller = {"role": "controller", "cluster": "analytics", "dags_s3_uri": DAGS}
    assert parse_user_data(json.dumps(controller)) == Role(
        "controller", "analytics", None, DAGS, None, ("default",)
    )
    doc = {**WORKER, "worker_concurrency": 8, "worker_queues": ["default", "heavy"]}
    assert parse_user_data(json.dumps(doc)) == Role(
        "worker", "analytics", "10.0.1.5", DAGS, 8, ("default", "heavy")
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
]


@pytest.mark.parametrize(("text", "named"), BAD)
def test_bad_user_data_is_one_line_naming_what_is_wrong(text, named):
    with pytest.raises(BadUserData) as info:
        parse_user_data(text)
    message = str(info.value)
    assert named in message and "\n" not in message and "Scaling out" in message
