"""A named deployment's secrets in the secret store: made once by its first instance,
read by every later one, never overwritten implicitly.

One document per deployment (contract.deployment_secret_name: an SSM SecureString,
or a Secrets Manager secret, per `secret_store`) holds what must outlive its
instances: the fernet keys (newest first; an old key stays while a rotation is in
progress), the JWT secret, the API secret key, the admin password and, for a
cluster, the broker password. A read that fails for any reason but "not found"
is tried again with backoff and then fails first boot (which is retried); it
never makes new secrets. Creating it is create-if-absent, so two first
instances at once end up with one document. A cluster's controller also says
where it is (contract.deployment_controller_name), which workers follow, and writes what
its workers hold (cluster.ROLE_SECRETS["worker"]) to a document of their own
(contract.deployment_worker_secret_name): the workers' role reads no other secret.
"""

import collections
import json
import time

from ..shared import contract
from ..shared.awsapi import (
    create_secretsmanager_secret,
    create_ssm_parameter,
    get_secretsmanager_secret,
    get_ssm_parameter,
    put_secretsmanager_secret,
    put_ssm_parameter,
)
from ..shared.runner import StepFailed

# Secrets of a deployment, besides the fernet keys (a list, "fernet_keys" in the document).
DEPLOYMENT_SECRETS = ("jwt_secret", "api_secret_key", "admin_password")
CLUSTER_SECRETS = (*DEPLOYMENT_SECRETS, "broker_password")
# Backoff of a read that failed for another reason than "not found": 2, 4, 8, 16, 32 s.
READ_ATTEMPTS = 6
FIRST_DELAY = 2.0


class StoreUnreachable(StepFailed):
    """The store answered neither the document nor "not found": nothing is made."""


# The store of a deployment: "ssm" or "secretsmanager", where, and the instance role's keys.
Store = collections.namedtuple("Store", "kind region creds endpoint")


def read_document(store, name, *, attempts=READ_ATTEMPTS, sleep=time.sleep):
    """The JSON document at ``name``, or None when the store says there is none. Any other
    failure is tried again (``attempts`` in all, doubling the wait), then StoreUnreachable."""
    get = get_ssm_parameter if store.kind == "ssm" else get_secretsmanager_secret
    delay, last = FIRST_DELAY, None
    for attempt in range(attempts):
        try:
            text = get(name, store.region, store.creds, store.endpoint)
            return json.loads(text) if text else None
        except (OSError, ValueError) as exc:
            last = exc
        if attempt + 1 < attempts:
            sleep(delay)
            delay *= 2
    raise StoreUnreachable(
        "cannot read %s from %s after %d tries (%s): first boot stops here and is tried again;"
        " it never makes new secrets while the store does not answer" % (name, store.kind, attempts, last)
    )


def _put(store, name, document):
    put = put_ssm_parameter if store.kind == "ssm" else put_secretsmanager_secret
    put(name, json.dumps(document, sort_keys=True), store.region, store.creds, store.endpoint)


def read_secrets(store, deployment, **kw):
    return read_document(store, contract.deployment_secret_name(store.kind, deployment), **kw)


def create_secrets(store, deployment, document):
    """Store the deployment's document unless one exists: True if this call made it."""
    create = create_ssm_parameter if store.kind == "ssm" else create_secretsmanager_secret
    name = contract.deployment_secret_name(store.kind, deployment)
    return create(name, json.dumps(document, sort_keys=True), store.region, store.creds, store.endpoint)


def replace_secrets(store, deployment, document):
    """Overwrite the document: only an explicit rotation does this."""
    _put(store, contract.deployment_secret_name(store.kind, deployment), document)


def put_worker_secrets(store, deployment, secrets):
    """The workers' document: what they hold, as the controller holds it now."""
    _put(store, contract.deployment_worker_secret_name(store.kind, deployment), secrets)


def read_worker_secrets(store, deployment, **kw):
    return read_document(store, contract.deployment_worker_secret_name(store.kind, deployment), **kw)


def put_controller(store, deployment, address):
    _put(store, contract.deployment_controller_name(store.kind, deployment), {"address": address})


def read_controller(store, deployment, **kw):
    doc = read_document(store, contract.deployment_controller_name(store.kind, deployment), **kw)
    return (doc or {}).get("address")


def document_of(secrets, fernet_keys, names):
    """The document of a deployment from a node's secrets (by name) and its fernet keys."""
    return dict({name: secrets[name] for name in names}, fernet_keys=list(fernet_keys))


def secrets_of(document, names):
    """(secrets by name, fernet keys newest first) of a stored document; a document
    lacking one of `names` is refused (a store written by hand, or by another version)."""
    missing = [n for n in ("fernet_keys", *names) if not document.get(n)]
    if missing:
        raise StepFailed(
            "the deployment's stored secrets lack %s: fix or forget the deployment" % ", ".join(missing)
        )
    return {name: document[name] for name in names}, list(document["fernet_keys"])
