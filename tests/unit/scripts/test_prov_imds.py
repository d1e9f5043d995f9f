"""The IMDSv2 client against a small IMDSv2-only metadata server (token PUT required)."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from provisioning.shared.awsapi import Imds, NoMetadata

TOKEN = "tok-123"
DOC = {"instanceId": "i-0abc", "region": "ap-northeast-2"}


def make_handler(role):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _send(self, code, body=b""):
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_PUT(self):
            if self.path == "/latest/api/token" and self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
                self._send(200, TOKEN.encode())
            else:
                self._send(400)

        def do_GET(self):
            if self.headers.get("X-aws-ec2-metadata-token") != TOKEN:
                self._send(401)  # IMDSv1 refused
                return
            routes = {
                "/latest/dynamic/instance-identity/document": json.dumps(DOC),
                "/latest/meta-data/instance-id": DOC["instanceId"],
            }
            if role:
                routes["/latest/meta-data/iam/security-credentials/"] = role
                routes["/latest/meta-data/iam/security-credentials/" + role] = json.dumps(
                    {"AccessKeyId": "AK", "SecretAccessKey": "SK", "Token": "T"}
                )
            body = routes.get(self.path)
            self._send(200, body.encode()) if body is not None else self._send(404)

    return Handler


@pytest.fixture(params=["airflow-role", None], ids=["with-role", "no-role"])
def imds(request):
    server = HTTPServer(("127.0.0.1", 0), make_handler(request.param))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Imds(base=f"http://127.0.0.1:{server.server_port}"), request.param
    server.shutdown()


def test_identity_needs_and_uses_a_token(imds):
    client, _ = imds
    doc = json.loads(client.get("dynamic/instance-identity/document"))
    assert doc == DOC
    assert client.get("meta-data/instance-id") == "i-0abc"
    assert client.get("meta-data/nothing-here") is None


def test_role_credentials_or_none(imds):
    client, role = imds
    creds = client.role_credentials()
    if role:
        assert creds == {"access_key": "AK", "secret_key": "SK", "token": "T"}
    else:
        assert creds is None


def test_no_metadata_service_raises_quickly():
    client = Imds(base="http://127.0.0.1:9", timeout=0.5, attempts=1)
    with pytest.raises(NoMetadata):
        client.get("meta-data/instance-id")


def test_a_slow_metadata_service_is_waited_for_with_backoff():
    now = [0.0]
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        now[0] += seconds

    client = Imds(
        base="http://127.0.0.1:9", timeout=0.1, attempts=1, patience=60, sleep=sleep, clock=lambda: now[0]
    )
    with pytest.raises(NoMetadata, match="after 8 tries"):
        client.token()
    assert slept[:4] == [0.5, 1.0, 2.0, 4.0]  # doubling
    assert 60 <= sum(slept) <= 61  # about a minute in all, then "no metadata"
