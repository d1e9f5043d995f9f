import datetime
import json

import botocore.auth as botocore_auth
from botocore import awsrequest, credentials
from provisioning.shared.awsapi import sigv4_headers


def test_sigv4_matches_botocore():
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
        extra={"content-type": "application/x-amz-json-1.1", "x-amz-target": "AmazonSSM.PutParameter"},
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
    kw = {"region": "us-east-1", "service": "ssm", "extra": {"x-amz-target": "T"}, "now": now}
    a = sigv4_headers("POST", "h", "/", b"{}", creds=creds, **kw)["authorization"]
    b = sigv4_headers("POST", "h", "/", b"{ }", creds=creds, **kw)["authorization"]
    c = sigv4_headers("POST", "h", "/", b"{}", creds=dict(creds, secret_key="s2"), **kw)["authorization"]
    assert len({a, b, c}) == 3
    assert "Credential=AK/20260102/us-east-1/ssm/aws4_request" in a
