from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from airflow_ami.clouds.local import imds

DOC = {
    "instance_id": "i-0123456789abcdef0",
    "ami_id": "ami-0123456789abcdef0",
    "instance_type": "t3.medium",
    "private_ip": "10.213.0.2",
    "hostname": "ip-10-213-0-2",
    "region": "eu-west-1",
    "availability_zone": "eu-west-1a",
    "account_id": "123456789012",
    "public_key": "ssh-ed25519 AAAAC3Nza test",
}


@pytest.fixture
def base_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), imds.make_handler(imds.metadata_tree(DOC), imds.Tokens()))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def call(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def token(base_url: str) -> str:
    status, body = call(f"{base_url}/latest/api/token", "PUT", {imds.TTL_HEADER: "60"})
    assert status == 200
    return body


def get(base_url: str, path: str) -> tuple[int, str]:
    return call(f"{base_url}/latest/{path}", headers={imds.TOKEN_HEADER: token(base_url)})


def test_token_needs_a_ttl_header(base_url: str) -> None:
    assert call(f"{base_url}/latest/api/token", "PUT")[0] == 400
    assert call(f"{base_url}/latest/api/token", "PUT", {imds.TTL_HEADER: "0"})[0] == 400


def test_forwarded_token_requests_are_refused(base_url: str) -> None:
    headers = {imds.TTL_HEADER: "60", "X-Forwarded-For": "1.2.3.4"}
    assert call(f"{base_url}/latest/api/token", "PUT", headers)[0] == 403


def test_imdsv1_get_is_unauthorized(base_url: str) -> None:
    assert call(f"{base_url}/latest/meta-data/instance-id")[0] == 401
    bad = {imds.TOKEN_HEADER: "not-a-token"}
    assert call(f"{base_url}/latest/meta-data/instance-id", headers=bad)[0] == 401


def test_serves_instance_identity(base_url: str) -> None:
    assert get(base_url, "meta-data/instance-id") == (200, DOC["instance_id"])
    assert get(base_url, "meta-data/placement/region") == (200, "eu-west-1")
    status, body = get(base_url, "dynamic/instance-identity/document")
    assert status == 200
    document = json.loads(body)
    assert document["region"] == "eu-west-1"
    assert document["instanceId"] == DOC["instance_id"]


def test_serves_the_public_key(base_url: str) -> None:
    assert get(base_url, "meta-data/public-keys/") == (200, "0=local-key")
    assert get(base_url, "meta-data/public-keys/0/openssh-key") == (200, DOC["public_key"] + "\n")


def test_no_iam_role(base_url: str) -> None:
    assert get(base_url, "meta-data/iam/security-credentials/")[0] == 404
    assert get(base_url, "meta-data/iam/")[0] == 404


def test_an_instance_profile_serves_its_role_credentials() -> None:
    role = {
        "name": "airflow-ami-local",
        "profile_arn": "arn:aws:iam::123456789012:instance-profile/airflow-ami-local",
        "credentials": {"Code": "Success", "AccessKeyId": "AK", "SecretAccessKey": "SK", "Token": "T"},
    }
    tree = imds.metadata_tree({**DOC, "role": role})
    assert imds.lookup(tree, "meta-data/iam/security-credentials/") == "airflow-ami-local"
    creds = json.loads(imds.lookup(tree, "meta-data/iam/security-credentials/airflow-ami-local") or "")
    assert (creds["AccessKeyId"], creds["SecretAccessKey"], creds["Token"]) == ("AK", "SK", "T")
    assert "instance-profile/airflow-ami-local" in (imds.lookup(tree, "meta-data/iam/info") or "")


def test_listing_marks_directories(base_url: str) -> None:
    status, body = get(base_url, "meta-data/")
    assert status == 200
    assert "instance-id" in body.splitlines()
    assert "placement/" in body.splitlines()


def test_a_group_member_reads_its_target_lifecycle_state_as_the_host_writes_it(tmp_path: Path) -> None:
    state = tmp_path / imds.LIFECYCLE_STATE_FILE
    member = imds.metadata_tree({**DOC, "lifecycle_state_file": str(state)})
    path = "meta-data/autoscaling/target-lifecycle-state"
    assert imds.lookup(imds.metadata_tree(DOC), path) is None, "not a member: no such path, as on EC2"
    assert imds.lookup(member, path) is None, "nothing written yet"
    imds.write_lifecycle_state(state, "InService")
    assert imds.lookup(member, path) == "InService"
    assert imds.lookup(member, "meta-data/autoscaling/") == "target-lifecycle-state"
    imds.write_lifecycle_state(state, "Terminated")
    assert imds.lookup(member, path) == "Terminated", "read at each GET, not at start"
