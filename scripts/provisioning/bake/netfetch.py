"""HTTP(S) downloads with the standard library (constraints, repository keys)."""

import os
import ssl
import time
import urllib.error
import urllib.request

USER_AGENT = "airflow-ami-provision/1"


def _ssl_context():
    cafile = os.environ.get("SSL_CERT_FILE")
    if cafile and os.path.isfile(cafile):
        return ssl.create_default_context(cafile=cafile)
    return ssl.create_default_context()


def fetch_bytes(url, headers=None, attempts=3, timeout=60):
    last = None
    for attempt in range(attempts):
        req = urllib.request.Request(url, headers=dict({"User-Agent": USER_AGENT}, **(headers or {})))
        try:
            kw = {"context": _ssl_context()} if url.startswith("https:") else {}
            with urllib.request.urlopen(req, timeout=timeout, **kw) as resp:
                return resp.read()
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                raise
            last = exc
        except (urllib.error.URLError, OSError) as exc:
            last = exc
        time.sleep(2 * (attempt + 1))
    raise OSError("cannot fetch %s: %s" % (url, last))
