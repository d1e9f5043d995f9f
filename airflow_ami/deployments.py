"""What outlives a named deployment's instances, kept and ended only by explicit commands.

`./bake rotate-fernet-key` rotates its fernet key across every node; `./bake
forget-deployment` deletes its secrets and its backups (teardown never does).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any, TextIO

import botocore.exceptions

from airflow_ami.builddir import BuildDir, MissingRecord
from airflow_ami.clouds import InstanceRecord
from airflow_ami.driver import instance as driver
from airflow_ami.lifecycle import cloud_for, cluster_members, launched
from airflow_ami.seam import contract, layout
from airflow_ami.settings import LaunchSettings, SettingsError, Target

PROVISION = f"python3 {layout.CODE_DIR}/provision.py"


class DeploymentError(RuntimeError):
    """A deployment command cannot go on; the message says what to do."""


def nodes(bdir: BuildDir) -> tuple[InstanceRecord, list[InstanceRecord]]:
    """The launched database node of a named deployment, and its workers."""
    head = launched(bdir)
    if not head.deployment:
        raise MissingRecord(f"{head.instance_id} is not of a named deployment: its secrets are its own")
    workers = [
        InstanceRecord.from_record(m)
        for m in cluster_members(bdir, head.cluster)
        if head.cluster and m["role"] == "worker"
    ]
    return head, workers


def rotate_fernet_key(target: Target, out: TextIO = sys.stdout) -> list[str]:
    """A new fernet key first on every node, every value re-encrypted with it, the old one
    dropped once no node needs it; returns the nodes' ids."""
    bdir = BuildDir.of(target)
    head, workers = nodes(bdir)

    def on(node: InstanceRecord, command: str) -> None:
        out.write(f"rotate-fernet-key: {node.instance_id}: {command}\n")
        out.flush()
        result = driver.Instance.of(node, bdir.root / f"ssh_config-{node.instance_id}").sh(
            f"{PROVISION} {command}"
        )
        if result.rc != 0:
            raise DeploymentError(
                f"rotate-fernet-key: `{command}` failed on {node.instance_id}: {result.stdout.strip()[-300:]}"
            )

    on(head, "rotate-fernet-key begin")
    for worker in workers:
        on(worker, "refresh-secrets")
    on(head, "rotate-fernet-key finish")
    for worker in workers:
        on(worker, "refresh-secrets")
    return [head.instance_id, *(w.instance_id for w in workers)]


@contextlib.contextmanager
def _unless_missing() -> Iterator[None]:
    try:
        yield
    except botocore.exceptions.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code not in ("ParameterNotFound", "ResourceNotFoundException", "NoSuchBucket"):
            raise


def forget(settings: LaunchSettings, apply: bool) -> list[str]:
    """Every secret and backup of --deployment: listed, and with `apply` deleted."""
    name = settings.deployment
    if not name:
        raise SettingsError("deployment", "the name of the deployment to forget")
    bdir = BuildDir.of(settings)
    with contextlib.suppress(MissingRecord):
        if launched(bdir).deployment == name:
            raise DeploymentError(
                f"deployment {name} is launched here: `./bake teardown` it before forgetting it"
            )
    cloud = cloud_for(settings)
    found: list[str] = []
    for kind in contract.SECRET_STORES:
        store = cloud.client(settings, kind)
        for secret in (
            contract.deployment_secret_name(kind, name),
            contract.deployment_worker_secret_name(kind, name),
            contract.deployment_controller_name(kind, name),
        ):
            if _exists(store, kind, secret):
                found.append(f"{kind} {secret}")
                if apply:
                    _delete(store, kind, secret)
    if settings.backup_s3_uri:
        bucket, prefix = contract.backup_location(settings.backup_s3_uri, name)
        s3 = cloud.client(settings, "s3")
        with _unless_missing():
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                keys = [item["Key"] for item in page.get("Contents", [])]
                found += [f"s3://{bucket}/{key}" for key in keys]
                if apply and keys:
                    s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys]})
    return found


def _exists(store: Any, kind: str, name: str) -> bool:
    with _unless_missing():
        if kind == "ssm":
            store.get_parameter(Name=name)
        else:
            store.describe_secret(SecretId=name)
        return True
    return False


def _delete(store: Any, kind: str, name: str) -> None:
    with _unless_missing():
        if kind == "ssm":
            store.delete_parameter(Name=name)
        else:
            store.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)
