"""An IMDSv2-only instance metadata service for one local-cloud instance.

Run inside the instance's network namespace (``ip netns exec``), bound to
169.254.169.254:80, with a JSON file describing the instance. Standard library
only, so it runs as a plain script without the package on sys.path.

Like EC2 with ``HttpTokens=required``: a token from ``PUT /latest/api/token``
(TTL header mandatory) must accompany every GET, else 401.

Every path is fixed at start but one: an Auto Scaling group's member reads
``meta-data/autoscaling/target-lifecycle-state`` from a file the host writes
(``write_lifecycle_state``): InService, then Terminated when the group lets it go.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

TOKEN_PATH = "/latest/api/token"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
MAX_TTL = 21600
# A group member's target lifecycle state, next to its IMDS document (the host writes it).
LIFECYCLE_STATE_FILE = "target-lifecycle-state"


def write_lifecycle_state(path: Path, state: str) -> None:
    """What the instance reads from IMDS as its target lifecycle state, from its next GET on."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(state + "\n")
    os.replace(tmp, path)


def read_at_each_get(path: str) -> Callable[[], str | None]:
    """A leaf whose text is the file's now (404 while there is none)."""

    def read() -> str | None:
        try:
            return Path(path).read_text().strip()
        except OSError:
            return None

    return read


def metadata_tree(doc: dict[str, Any]) -> dict[str, Any]:
    """The GET-able paths below /latest/, as a nested dict of leaves: text, or what
    read_at_each_get returns."""
    meta: dict[str, Any] = {
        "ami-id": doc["ami_id"],
        "instance-id": doc["instance_id"],
        "instance-type": doc["instance_type"],
        "local-ipv4": doc["private_ip"],
        "local-hostname": doc["hostname"],
        "hostname": doc["hostname"],
        "placement": {"region": doc["region"], "availability-zone": doc["availability_zone"]},
    }
    if doc.get("role"):
        # An instance profile's role: moto takes any key, so the local cloud's fake ones.
        meta["iam"] = {
            "info": json.dumps({"Code": "Success", "InstanceProfileArn": doc["role"]["profile_arn"]}),
            "security-credentials": {doc["role"]["name"]: json.dumps(doc["role"]["credentials"])},
        }
    if doc.get("lifecycle_state_file"):
        # As on EC2: only a member of an Auto Scaling group has the path.
        meta["autoscaling"] = {"target-lifecycle-state": read_at_each_get(doc["lifecycle_state_file"])}
    if doc.get("public_key"):
        meta["public-keys"] = {"0": {"openssh-key": doc["public_key"].strip() + "\n"}}
    identity = {
        "accountId": doc["account_id"],
        "architecture": "x86_64",
        "availabilityZone": doc["availability_zone"],
        "imageId": doc["ami_id"],
        "instanceId": doc["instance_id"],
        "instanceType": doc["instance_type"],
        "privateIp": doc["private_ip"],
        "region": doc["region"],
        "version": "2017-09-30",
    }
    tree = {
        "meta-data": meta,
        "dynamic": {"instance-identity": {"document": json.dumps(identity, indent=2)}},
    }
    if doc.get("user_data"):
        # As on EC2: no user data, no user-data path (404).
        tree["user-data"] = doc["user_data"]
    return tree


def lookup(tree: dict[str, Any], path: str) -> str | None:
    """Leaf text, or a directory listing like EC2's (sub-dirs end with '/')."""
    node: Any = tree
    for part in [p for p in path.split("/") if p]:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    if callable(node):
        return node()  # type: ignore[no-any-return]
    if isinstance(node, str):
        return node
    if path.rstrip("/").endswith("public-keys"):
        # EC2 lists keys as "<index>=<key name>".
        return "\n".join(f"{i}=local-key" for i in node)
    return "\n".join(k + ("/" if isinstance(v, dict) else "") for k, v in node.items())


class Tokens:
    def __init__(self) -> None:
        self._expiry: dict[str, float] = {}
        self._lock = threading.Lock()

    def issue(self, ttl: int) -> str:
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._expiry[token] = time.monotonic() + ttl
        return token

    def valid(self, token: str | None) -> bool:
        with self._lock:
            expiry = self._expiry.get(token or "")
        return expiry is not None and expiry > time.monotonic()


def make_handler(tree: dict[str, Any], tokens: Tokens) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "EC2ws"
        sys_version = ""

        def do_PUT(self) -> None:
            if self.path != TOKEN_PATH:
                return self._reply(404, "Not Found")
            if self.headers.get("X-Forwarded-For"):
                return self._reply(403, "Forbidden")
            try:
                ttl = int(self.headers.get(TTL_HEADER, ""))
            except ValueError:
                return self._reply(400, "Bad Request")
            if not 1 <= ttl <= MAX_TTL:
                return self._reply(400, "Bad Request")
            return self._reply(200, tokens.issue(ttl), {TTL_HEADER: str(ttl)})

        def do_GET(self) -> None:
            if not tokens.valid(self.headers.get(TOKEN_HEADER)):
                return self._reply(401, "Unauthorized")
            path = self.path.split("?", 1)[0]
            if not path.startswith("/latest/"):
                return self._reply(404, "Not Found")
            body = lookup(tree, path[len("/latest/") :])
            if body is None:
                return self._reply(404, "Not Found")
            return self._reply(200, body)

        def _reply(self, status: int, body: str, headers: dict[str, str] | None = None) -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            print(f"imds: {self.address_string()} {format % args}", flush=True)

    return Handler


def serve(doc: dict[str, Any], host: str, port: int) -> None:
    server = ThreadingHTTPServer((host, port), make_handler(metadata_tree(doc), Tokens()))
    print(f"imds: serving {doc['instance_id']} on {host}:{port}", flush=True)
    server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True, help="JSON file describing the instance")
    parser.add_argument("--host", default="169.254.169.254")
    parser.add_argument("--port", type=int, default=80)
    args = parser.parse_args()
    with open(args.config) as f:
        serve(json.load(f), args.host, args.port)


if __name__ == "__main__":
    main()
