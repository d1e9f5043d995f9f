"""IMDSv2, SSM and Secrets Manager (AWS JSON protocol) and S3 objects, signed with SigV4, stdlib only."""

import datetime
import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from urllib.parse import quote

IMDS = "http://169.254.169.254"


class NoMetadata(Exception):
    pass


class Imds(object):
    """IMDSv2 client: a token from PUT /latest/api/token, then GETs with the token."""

    def __init__(
        self, base=IMDS, timeout=2.0, attempts=3, *, patience=0.0, sleep=time.sleep, clock=time.monotonic
    ):
        """``attempts`` quick tries; with ``patience`` (seconds), keep trying with
        exponential backoff until that much time has passed (a slow metadata service
        at boot is not a missing one)."""
        self.base = base
        self.timeout = timeout
        self.attempts = attempts
        self.patience = patience
        self._sleep = sleep
        self._clock = clock
        self._token = None

    def _open(self, req):
        # never follow a proxy for link-local metadata
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        return opener.open(req, timeout=self.timeout)

    def token(self):
        if self._token is None:
            last = None
            deadline = self._clock() + self.patience
            delay = 0.5
            tries = 0
            while True:
                tries += 1
                req = urllib.request.Request(
                    self.base + "/latest/api/token",
                    method="PUT",
                    headers={"X-aws-ec2-metadata-token-ttl-seconds": "300"},
                )
                try:
                    with self._open(req) as resp:
                        self._token = resp.read().decode()
                        break
                except (urllib.error.URLError, OSError) as exc:
                    last = exc
                if tries >= self.attempts and self._clock() >= deadline:
                    break
                if tries >= self.attempts:
                    self._sleep(min(delay, max(0.0, deadline - self._clock())))
                    delay *= 2
            if self._token is None:
                raise NoMetadata(
                    "no IMDSv2 token from %s after %d tries: %s" % (self.base, tries, last)
                ) from None
        return self._token

    def get(self, path):
        req = urllib.request.Request(
            self.base + "/latest/" + path.lstrip("/"), headers={"X-aws-ec2-metadata-token": self.token()}
        )
        try:
            with self._open(req) as resp:
                return resp.read().decode()
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise NoMetadata("IMDS %s: HTTP %d" % (path, exc.code)) from exc
        except (urllib.error.URLError, OSError) as exc:
            raise NoMetadata("IMDS %s: %s" % (path, exc)) from exc

    def role_credentials(self):
        """Instance-profile credentials, or None when the instance has no role."""
        roles = self.get("meta-data/iam/security-credentials/")
        if not roles or not roles.strip():
            return None
        doc = self.get("meta-data/iam/security-credentials/" + roles.split()[0])
        if not doc:
            return None
        data = json.loads(doc)
        return {
            "access_key": data["AccessKeyId"],
            "secret_key": data["SecretAccessKey"],
            "token": data.get("Token"),
        }


def _hmac(key, msg):
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def canonical_query(params):
    """A query string as SigV4 signs it (and as the request must send it): sorted, encoded."""
    return "&".join(
        "%s=%s" % (quote(k, safe="-_.~"), quote(v, safe="-_.~")) for k, v in sorted(params.items())
    )


def sigv4_headers(method, url_host, path, body, *, region, service, creds, extra, now=None, query=""):
    """Headers of a request signed with Signature Version 4 (pure); ``extra``: the
    service's own headers (signed too); ``query``: the canonical query string."""
    now = now or datetime.datetime.utcnow()
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    date = now.strftime("%Y%m%d")
    headers = dict(extra, host=url_host)
    headers["x-amz-date"] = amz_date
    if creds.get("token"):
        headers["x-amz-security-token"] = creds["token"]
    signed = sorted(headers)
    canonical = "\n".join(
        [
            method,
            path,
            query,
            "".join("%s:%s\n" % (k, headers[k].strip()) for k in signed),
            ";".join(signed),
            hashlib.sha256(body).hexdigest(),
        ]
    )
    scope = "%s/%s/%s/aws4_request" % (date, region, service)
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(
        _hmac(_hmac(_hmac(("AWS4" + creds["secret_key"]).encode(), date), region), service), "aws4_request"
    )
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = "AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, Signature=%s" % (
        creds["access_key"],
        scope,
        ";".join(signed),
        signature,
    )
    return headers


def call(service, target, payload, region, creds, *, endpoint=None, timeout=15):
    endpoint = (endpoint or "https://%s.%s.amazonaws.com" % (service, region)).rstrip("/")
    host = endpoint.split("://", 1)[1]
    body = json.dumps(payload).encode()
    json_headers = {"content-type": "application/x-amz-json-1.1", "x-amz-target": target}
    headers = sigv4_headers(
        "POST", host, "/", body, region=region, service=service, creds=creds, extra=json_headers
    )
    req = urllib.request.Request(endpoint + "/", data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read().decode() or "{}")
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")[:300]
        raise OSError("%s %s: HTTP %d %s" % (service, target, exc.code, detail)) from exc


def query_call(service, action, params, region, creds, *, version, endpoint=None, timeout=15):
    """One call of an AWS Query-protocol API (CloudWatch, Auto Scaling): a form POST, signed;
    the XML response's root element. ``params`` are flat: {"MetricData.member.1.MetricName": ...}."""
    endpoint = (endpoint or "https://%s.%s.amazonaws.com" % (service, region)).rstrip("/")
    host = endpoint.split("://", 1)[1]
    body = canonical_query(dict(params, Action=action, Version=version)).encode()
    form = {"content-type": "application/x-www-form-urlencoded; charset=utf-8"}
    headers = sigv4_headers("POST", host, "/", body, region=region, service=service, creds=creds, extra=form)
    req = urllib.request.Request(endpoint + "/", data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return ET.fromstring(resp.read() or b"<empty/>")
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")[:300]
        raise OSError("%s %s: HTTP %d %s" % (service, action, exc.code, detail)) from exc


def put_ssm_parameter(name, value, region, creds, endpoint=None):
    return call(
        "ssm",
        "AmazonSSM.PutParameter",
        {"Name": name, "Value": value, "Type": "SecureString", "Overwrite": True},
        region,
        creds,
        endpoint=endpoint,
    )


def create_ssm_parameter(name, value, region, creds, endpoint=None):
    """Create the SecureString unless it exists: True if made, False if it was there."""
    payload = {"Name": name, "Value": value, "Type": "SecureString", "Overwrite": False}
    try:
        call("ssm", "AmazonSSM.PutParameter", payload, region, creds, endpoint=endpoint)
    except OSError as exc:
        if "ParameterAlreadyExists" in str(exc):
            return False
        raise
    return True


def _unless_missing(missing_error, function, *args, **kwargs):
    """function(...), or None when AWS answers ``missing_error`` (no such name)."""
    try:
        return function(*args, **kwargs)
    except OSError as exc:
        if missing_error in str(exc):
            return None
        raise


def get_ssm_parameter(name, region, creds, endpoint=None):
    """The decrypted value of a parameter, or None when there is none of that name."""
    doc = _unless_missing(
        "ParameterNotFound",
        call,
        "ssm",
        "AmazonSSM.GetParameter",
        {"Name": name, "WithDecryption": True},
        region,
        creds,
        endpoint=endpoint,
    )
    return doc["Parameter"]["Value"] if doc else None


def get_secretsmanager_secret(name, region, creds, endpoint=None):
    """The secret's string, or None when there is none of that name."""
    doc = _unless_missing(
        "ResourceNotFoundException",
        call,
        "secretsmanager",
        "secretsmanager.GetSecretValue",
        {"SecretId": name},
        region,
        creds,
        endpoint=endpoint,
    )
    return doc.get("SecretString") if doc else None


def create_secretsmanager_secret(name, value, region, creds, endpoint=None):
    """Create the secret unless it exists: True if made, False if it was there."""
    try:
        call(
            "secretsmanager",
            "secretsmanager.CreateSecret",
            {"Name": name, "SecretString": value},
            region,
            creds,
            endpoint=endpoint,
        )
    except OSError as exc:
        if "ResourceExistsException" in str(exc):
            return False
        raise
    return True


def put_secretsmanager_secret(name, value, region, creds, endpoint=None):
    try:
        return call(
            "secretsmanager",
            "secretsmanager.PutSecretValue",
            {"SecretId": name, "SecretString": value},
            region,
            creds,
            endpoint=endpoint,
        )
    except OSError as exc:
        if "ResourceNotFoundException" not in str(exc):
            raise
    return call(
        "secretsmanager",
        "secretsmanager.CreateSecret",
        {"Name": name, "SecretString": value},
        region,
        creds,
        endpoint=endpoint,
    )


def s3_request(
    method, bucket, key, region, creds, *, endpoint=None, data=b"", query=None, timeout=300, headers=None
):
    """One S3 request (path-style addressing, which every endpoint, moto's too, accepts):
    the response body, or None for HTTP 404. ``headers``: S3's own (x-amz-*), signed too."""
    endpoint = (endpoint or "https://s3.%s.amazonaws.com" % region).rstrip("/")
    host = endpoint.split("://", 1)[1]
    path = (
        "/%s/%s" % (quote(bucket, safe=""), quote(key, safe="/")) if key else "/%s" % quote(bucket, safe="")
    )
    canonical = canonical_query(query or {})
    # An explicit type: urllib would otherwise send a body as a form, which S3 servers may parse.
    extra = {"x-amz-content-sha256": hashlib.sha256(data).hexdigest()}
    if method == "PUT":
        extra["content-type"] = "application/octet-stream"
    extra.update(headers or {})
    headers = sigv4_headers(
        method, host, path, data, region=region, service="s3", creds=creds, extra=extra, query=canonical
    )
    url = endpoint + path + ("?" + canonical if canonical else "")
    req = urllib.request.Request(url, data=data if method == "PUT" else None, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.read()
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        detail = exc.read().decode("utf-8", "replace")[:300]
        raise OSError("s3 %s s3://%s/%s: HTTP %d %s" % (method, bucket, key, exc.code, detail)) from exc


def put_s3_object(bucket, key, data, region, creds, *, endpoint=None, timeout=300, headers=None):
    done = s3_request(
        "PUT", bucket, key, region, creds, endpoint=endpoint, data=data, timeout=timeout, headers=headers
    )
    if done is None:
        raise OSError("s3 PUT s3://%s/%s: HTTP 404 (no such bucket)" % (bucket, key))


def get_s3_object(bucket, key, region, creds, *, endpoint=None, timeout=300):
    """The object's bytes, or None when there is no such object."""
    return s3_request("GET", bucket, key, region, creds, endpoint=endpoint, timeout=timeout)


def list_s3_keys(bucket, prefix, region, creds, *, endpoint=None):
    """Every key under ``prefix`` (ListObjectsV2, page after page)."""
    keys, token = [], None
    while True:
        query = {"list-type": "2", "prefix": prefix}
        if token:
            query["continuation-token"] = token
        body = s3_request("GET", bucket, "", region, creds, endpoint=endpoint, query=query)
        if body is None:
            raise OSError("s3 ListObjectsV2 s3://%s/%s: no such bucket" % (bucket, prefix))
        root = ET.fromstring(body)
        ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
        keys += [node.text for node in root.iter(ns + "Key")]
        token = root.findtext(ns + "NextContinuationToken")
        if root.findtext(ns + "IsTruncated") != "true" or not token:
            return keys
