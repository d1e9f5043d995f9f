"""api_tls self-signed: first boot makes a certificate the API and in-host clients can use."""

import os
import socket
import ssl
import subprocess
import threading

import pytest
from provfakes import RecordingContext
from provisioning.boot import firstboot
from provisioning.shared import layout

METADATA = {
    "meta-data/local-hostname": "ip-10-0-0-7.ec2.internal",
    "meta-data/local-ipv4": "10.0.0.7",
    "meta-data/public-ipv4": "203.0.113.9",
}


class FakeImds:
    def get(self, path):
        return METADATA.get(path)


@pytest.fixture
def tls(tmp_path, monkeypatch):
    monkeypatch.setattr(layout, "API_TLS_CERT", str(tmp_path / "api.crt"))
    monkeypatch.setattr(layout, "API_TLS_KEY", str(tmp_path / "api.key"))
    return tmp_path


def first_boot(mode, api_tls="self-signed"):
    ctx = RecordingContext({"api_tls": api_tls, "api_host": "0.0.0.0"}, state=firstboot.FirstbootState())
    ctx.state.mode, ctx.state.imds = mode, FakeImds()

    def run(argv, input_text=None, **kw):
        ctx.commands.append(list(argv))
        subprocess.run(argv, check=True, capture_output=True)
        return 0, ""

    ctx.run = run
    return ctx, firstboot.make_api_certificate(ctx)


def test_plain_http_makes_no_certificate(tls):
    ctx, result = first_boot("complete", api_tls="none")
    assert result == "skipped" and ctx.written == {} and ctx.commands == []


def test_the_certificate_names_the_instance_and_serves_tls_to_a_strict_client(tls):
    ctx, result = first_boot("complete")
    assert result is None
    cert, key = ctx.written[layout.API_TLS_CERT], ctx.written[layout.API_TLS_KEY]
    assert b"PRIVATE KEY" in key and b"PRIVATE KEY" not in cert
    (tls / "api.crt").write_bytes(cert)
    (tls / "api.key").write_bytes(key)
    sans = subprocess.run(
        ["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", str(tls / "api.crt")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for name in (
        "DNS:localhost",
        "DNS:ip-10-0-0-7.ec2.internal",
        "IP Address:127.0.0.1",
        "IP Address:10.0.0.7",
        "IP Address:203.0.113.9",
        f"DNS:{socket.gethostname()}",
    ):
        assert name in sans
    # What the tasks' execution API client does: trust ssl_cert, verify strictly, by address.
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(str(tls / "api.crt"), str(tls / "api.key"))
    client = ssl.create_default_context(cafile=str(tls / "api.crt"))
    client.verify_flags |= ssl.VERIFY_X509_STRICT
    with socket.create_server(("127.0.0.1", 0)) as listener:
        serving = threading.Thread(target=serve_once, args=(listener, server), daemon=True)
        serving.start()
        with client.wrap_socket(
            socket.create_connection(listener.getsockname()), server_hostname="127.0.0.1"
        ) as conn:
            assert conn.recv(2) == b"ok"
        serving.join(5)


def serve_once(listener, context):
    accepted, _ = listener.accept()
    with context.wrap_socket(accepted, server_side=True) as conn:
        conn.sendall(b"ok")


def test_a_reboot_keeps_the_certificate_and_a_new_identity_replaces_it(tls):
    (tls / "api.crt").write_text("kept")
    (tls / "api.key").write_text("kept")
    ctx, result = first_boot("complete")
    assert result == "skipped" and ctx.written == {}
    ctx, result = first_boot("rotate")
    assert result is None and ctx.written[layout.API_TLS_CERT] != b"kept"


def test_a_task_may_reach_the_certificate_to_verify_the_api_but_not_list_the_directory(tls, monkeypatch):
    """Tasks run as the task user and verify the execution API by the certificate: its
    directory lets others pass, not list; the key keeps its own mode (0640 root:airflow)."""
    made = {}
    monkeypatch.setattr(
        RecordingContext,
        "ensure_dir",
        lambda self, path, mode=0o755, *_: made.setdefault(path, mode) and False,
    )
    first_boot("complete")
    mode = made[os.path.dirname(layout.API_TLS_KEY)]
    assert mode & 0o001 and not mode & 0o006, oct(mode)
