import datetime
import json

import pytest
from provisioning.awsapi import sigv4_headers
from provisioning.netfetch import parse_simple_html, pick_wheel

FILES = [
    {
        "filename": "uv-0.13.9-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        "url": "u/x86",
        "hashes": {},
    },
    {"filename": "uv-0.13.9-py3-none-manylinux_2_28_aarch64.whl", "url": "u/arm28", "hashes": {}},
    {
        "filename": "uv-0.13.9-py3-none-manylinux_2_17_aarch64.manylinux2014_aarch64."
        "musllinux_1_1_aarch64.whl",
        "url": "u/arm17",
        "hashes": {},
    },
    {"filename": "uv-0.13.9-py3-none-macosx_11_0_arm64.whl", "url": "u/mac", "hashes": {}},
    {
        "filename": "uv-0.13.8-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        "url": "u/old",
        "hashes": {},
    },
    {"filename": "uv-0.13.9.tar.gz", "url": "u/sdist", "hashes": {}},
]


def test_pick_wheel_matches_machine_and_version():
    assert pick_wheel(FILES, "uv", "0.13.9", machine="x86_64")["url"] == "u/x86"
    # the newest manylinux tag wins when several match
    assert pick_wheel(FILES, "uv", "0.13.9", machine="aarch64")["url"] == "u/arm28"
    assert pick_wheel(FILES, "uv", "0.13.9", machine="arm64")["url"] == "u/arm28"


def test_pick_wheel_without_a_match_raises():
    with pytest.raises(LookupError):
        pick_wheel(FILES, "uv", "0.13.9", machine="riscv64")


def test_parse_simple_html_keeps_hashes_and_resolves_urls():
    html = (
        '<a href="../../files/uv-1-py3-none-manylinux_2_17_x86_64.whl#sha256=ab12">'
        "uv-1-py3-none-manylinux_2_17_x86_64.whl</a>"
    )
    files = parse_simple_html(html, "https://mirror.example/simple/uv/")
    assert files == [
        {
            "filename": "uv-1-py3-none-manylinux_2_17_x86_64.whl",
            "url": "https://mirror.example/files/uv-1-py3-none-manylinux_2_17_x86_64.whl",
            "hashes": {"sha256": "ab12"},
        }
    ]


def test_sigv4_matches_botocore():
    botocore_auth = pytest.importorskip("botocore.auth")
    credentials = pytest.importorskip("botocore.credentials")
    awsrequest = pytest.importorskip("botocore.awsrequest")
    creds = {
        "access_key": "AKIDEXAMPLE",
        "secret_key": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        "token": "session-token",
    }
    body = json.dumps({"Name": "/airflow/admin-password", "Value": "x"}).encode()
    req = awsrequest.AWSRequest(
        method="POST",
        url="https://ssm.eu-west-1.amazonaws.com/",
        data=body,
        headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "AmazonSSM.PutParameter"},
    )
    signer = botocore_auth.SigV4Auth(
        credentials.Credentials(creds["access_key"], creds["secret_key"], creds["token"]), "ssm", "eu-west-1"
    )
    signer.add_auth(req)
    # sign ours at the instant botocore used
    now = datetime.datetime.strptime(req.headers["X-Amz-Date"], "%Y%m%dT%H%M%SZ")
    ours = sigv4_headers(
        "POST",
        "ssm.eu-west-1.amazonaws.com",
        "/",
        body,
        region="eu-west-1",
        service="ssm",
        creds=creds,
        target="AmazonSSM.PutParameter",
        now=now,
    )
    theirs = req.headers["Authorization"]
    assert (
        ours["authorization"].split("SignedHeaders=")[1].split(",")[0]
        == theirs.split("SignedHeaders=")[1].split(",")[0]
    )
    assert ours["authorization"] == theirs


def test_sigv4_signature_depends_on_body_and_secret():
    now = datetime.datetime(2026, 1, 2, 3, 4, 5)
    creds = {"access_key": "AK", "secret_key": "s1"}
    kw = {"region": "us-east-1", "service": "ssm", "target": "T", "now": now}
    a = sigv4_headers("POST", "h", "/", b"{}", creds=creds, **kw)["authorization"]
    b = sigv4_headers("POST", "h", "/", b"{ }", creds=creds, **kw)["authorization"]
    c = sigv4_headers("POST", "h", "/", b"{}", creds=dict(creds, secret_key="s2"), **kw)["authorization"]
    assert len({a, b, c}) == 3
    assert "Credential=AK/20260102/us-east-1/ssm/aws4_request" in a
