"""HTTP(S) downloads with the standard library: package index (PEP 691/503) and files."""

import hashlib
import json
import os
import platform
import re
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request

DEFAULT_INDEX = "https://pypi.org/simple"
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


def wheel_platform_tags(machine=None):
    """manylinux tags this machine accepts, most specific first (pure)."""
    machine = machine or platform.machine()
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine.lower(), machine)
    return ["manylinux_2_%d_%s" % (minor, arch) for minor in range(40, 16, -1)] + ["manylinux2014_%s" % arch]


def pick_wheel(files, project, version, machine=None):
    """From index file entries [{filename, url, hashes}] pick the best wheel (pure)."""
    tags = wheel_platform_tags(machine)
    best = None
    prefix = "%s-%s-" % (project.replace("-", "_"), version)
    for entry in files:
        name = entry["filename"]
        if not name.startswith(prefix) or not name.endswith(".whl"):
            continue
        plat = name[:-4].split("-")[-1].split(".")
        ranks = [tags.index(p) for p in plat if p in tags]
        if ranks and (best is None or min(ranks) < best[0]):
            best = (min(ranks), entry)
    if best is None:
        raise LookupError("no %s %s wheel for this platform" % (project, version))
    return best[1]


def parse_simple_html(html, base_url):
    """PEP 503 page -> [{filename, url, hashes}] (pure)."""
    files = []
    for raw_href, text in re.findall(r'<a[^>]*href="([^"]+)"[^>]*>([^<]+)</a>', html):
        url, _, frag = raw_href.replace("&amp;", "&").partition("#")
        hashes = {}
        if "=" in frag:
            algo, _, digest = frag.partition("=")
            hashes[algo] = digest
        files.append({"filename": text.strip(), "url": urllib.parse.urljoin(base_url, url), "hashes": hashes})
    return files


def index_files(index_url, project):
    base = (index_url or DEFAULT_INDEX).rstrip("/") + "/%s/" % project
    raw = fetch_bytes(base, headers={"Accept": "application/vnd.pypi.simple.v1+json, text/html;q=0.1"})
    try:
        data = json.loads(raw.decode("utf-8"))
        return [
            {
                "filename": f["filename"],
                "url": urllib.parse.urljoin(base, f["url"]),
                "hashes": f.get("hashes", {}),
            }
            for f in data["files"]
        ]
    except ValueError:
        return parse_simple_html(raw.decode("utf-8", "replace"), base)


def download_wheel(index_url, project, version, dest_dir):
    """Download a platform wheel for project==version; verify its sha256. Returns path."""
    entry = pick_wheel(index_files(index_url, project), project, version)
    data = fetch_bytes(entry["url"], timeout=300)
    want = entry["hashes"].get("sha256")
    if want and hashlib.sha256(data).hexdigest() != want:
        raise OSError("sha256 mismatch for %s" % entry["filename"])
    path = os.path.join(dest_dir, entry["filename"])
    with open(path, "wb") as fh:
        fh.write(data)
    return path
