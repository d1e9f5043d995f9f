"""The instance's role in a cluster, from its EC2 user data (pure).

The document (README, "Scaling out") is a JSON object:

    {"role": "worker", "cluster": "analytics", "controller": "10.0.1.5",
     "dags_s3_uri": "s3://my-bucket/dags", "worker_concurrency": 8,
     "worker_queues": ["default"]}

No user data means ``standalone``. User data not starting with { or [ (a
cloud-init script or config) is not for us: also ``standalone``. A JSON
document with anything wrong in it is refused with one line naming the key and
the allowed form, so a mistyped worker never half-joins a cluster.
"""

import collections
import ipaddress
import json
import re

from .layout import CLUSTER_NAME_PATTERN, ROLES

CLUSTER_RE = re.compile(CLUSTER_NAME_PATTERN)
QUEUE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)%s(\.%s)*$" % (LABEL, LABEL))
MAX_CONCURRENCY = 256
DEFAULT_QUEUES = ("default",)

S3_URI_RE = re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[A-Za-z0-9!_.*'()/-]*)?$")

Role = collections.namedtuple("Role", "role cluster controller dags_s3_uri worker_concurrency worker_queues")

STANDALONE = Role("standalone", None, None, None, None, DEFAULT_QUEUES)


class BadUserData(ValueError):
    """One line: what is wrong with the user data and what is allowed."""


def _fail(key, allowed, found):
    raise BadUserData("user data %s: %s (found %r); see README 'Scaling out'" % (key, allowed, found))


def _controller_address(value):
    if isinstance(value, str):
        try:
            ipaddress.ip_address(value)
            return value
        except ValueError:
            if HOSTNAME_RE.match(value):
                return value
    return _fail("controller", "the controller's private IP address or DNS name", value)


def parse_user_data(text):
    """The Role that ``text`` (the raw user data, or None) asks for."""
    body = (text or "").strip()
    if not body.startswith(("{", "[")):
        return STANDALONE
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise BadUserData("user data is not valid JSON (%s); see README 'Scaling out'" % exc) from None
    if not isinstance(doc, dict):
        _fail("", "a JSON object", type(doc).__name__)
    known = set(Role._fields)
    for key in sorted(doc):
        if key not in known:
            _fail(repr(key), "not a key of the document; known: %s" % ", ".join(Role._fields), doc[key])
    role = doc.get("role", "standalone")
    if role not in ROLES:
        _fail("role", "one of %s" % ", ".join(ROLES), role)
    if role == "standalone":
        extra = sorted(k for k in doc if k != "role")
        if extra:
            _fail(extra[0], "only for a controller or a worker", doc[extra[0]])
        return STANDALONE
    cluster = doc.get("cluster")
    if not isinstance(cluster, str) or not CLUSTER_RE.match(cluster):
        _fail("cluster", "1-40 lower-case letters, digits and -, starting with a letter or digit", cluster)
    controller = None
    if role == "worker":
        controller = _controller_address(doc.get("controller"))
    elif "controller" in doc:
        _fail("controller", "only for a worker (a controller is its own)", doc["controller"])
    dags = doc.get("dags_s3_uri")
    if not isinstance(dags, str) or not S3_URI_RE.match(dags):
        _fail("dags_s3_uri", "s3://BUCKET[/PREFIX], the DAG bundle every node of the cluster reads", dags)
    concurrency = doc.get("worker_concurrency")
    if concurrency is not None and (
        isinstance(concurrency, bool)
        or not isinstance(concurrency, int)
        or not 1 <= concurrency <= MAX_CONCURRENCY
    ):
        _fail("worker_concurrency", "an integer 1-%d" % MAX_CONCURRENCY, concurrency)
    queues = doc.get("worker_queues", list(DEFAULT_QUEUES))
    if (
        not isinstance(queues, list)
        or not queues
        or not all(isinstance(q, str) and QUEUE_RE.match(q) for q in queues)
    ):
        _fail("worker_queues", "a non-empty list of queue names (letters, digits, _ . -)", queues)
    if role == "controller" and ("worker_concurrency" in doc or "worker_queues" in doc):
        _fail("worker_concurrency/worker_queues", "only for a worker", doc.get("worker_concurrency"))
    return Role(role, cluster, controller, dags, concurrency, tuple(queues))
