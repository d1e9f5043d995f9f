"""Launch settings: what `./bake launch` (and rehearse, scale, verify of a cluster) decides.

What the image decided when it was baked (its API port, TLS, admin user and
password store, SSH user) is not here: every launch step reads that from the
AMI's record or tags (airflow_ami/image/record.py), never from a flag.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airflow_ami.seam import contract, layout
from airflow_ami.settings.fields import (
    KMS_ARN_RE,
    _as_int,
    _as_list,
    _as_str,
    _between,
    _check,
    _matches,
    check_cidrs,
    check_cluster,
    check_dags_s3_uri,
    check_role,
    check_worker_iam_instance_profile,
    declaration,
    iam_instance_profile_setting,
    instance_type_setting,
    setting,
    ssh_interface_setting,
    ssh_keypair_name_setting,
    ssh_private_key_file_setting,
    subnet_id_setting,
    tags_setting,
    volume_size_setting,
)
from airflow_ami.settings.target import Target

# The cluster of `--workers N` when none is named.
DEFAULT_REHEARSAL_CLUSTER = "rehearsal"


def check_deployment(value: str, s: Mapping[str, Any]) -> None:
    # A cluster is its deployment: a second name for it would only disagree.
    _check(value == "" or bool(re.match(layout.CLUSTER_NAME_PATTERN, value)))
    _check(value in ("", s["cluster"]) or (s["role"] == "standalone" and not s["workers"]))


def check_restore(value: str, s: Mapping[str, Any]) -> None:
    _check(value in ("", contract.RESTORE_LATEST) or bool(contract.DUMP_URI_RE.match(value)))
    _check(value != contract.RESTORE_LATEST or bool(s["deployment"] or s["cluster"]))
    _check(value == "" or s["role"] != "worker")


# A cluster's workers: its launch's --workers, and the bounds its Auto Scaling group and
# scaling policy keep them within.
MAX_WORKERS = 8


def check_min_workers(value: int, s: Mapping[str, Any]) -> None:
    # At least one: the scaling policy divides the queue by the workers in service.
    _check(1 <= value <= MAX_WORKERS and (s["workers"] == 0 or value <= s["workers"]))


def check_max_workers(value: int, s: Mapping[str, Any]) -> None:
    _check(s["min_workers"] <= value <= MAX_WORKERS and s["workers"] <= value)


def check_cpu_quota(value: int, s: Mapping[str, Any]) -> None:
    # An EC2 instance's CPUs are its type's; here one instance may have at most the host's.
    _check(value == 0 or (MIN_CPU_QUOTA <= value <= 100 * (os.cpu_count() or 1) and s.get("cloud") != "aws"))


# A local instance's smallest CPU quota (percent of one CPU): below it Airflow's services
# take minutes to import and a figure measures only the starvation.
MIN_CPU_QUOTA = 20


def check_backup_interval(value: int, _: Mapping[str, Any]) -> None:
    _check(
        value == 0 or contract.MIN_BACKUP_INTERVAL_MINUTES <= value <= contract.MAX_BACKUP_INTERVAL_MINUTES
    )


@declaration
@dataclass(frozen=True, kw_only=True)
class LaunchSettings(Target):
    """Validated settings of one launch."""

    instance_type: str = instance_type_setting("instance type of the launched instances")
    subnet_id: str = subnet_id_setting("subnet of the launched instances (default: the default VPC's)")
    iam_instance_profile: str = iam_instance_profile_setting("instance profile of the launched instances")
    ssh_interface: str = ssh_interface_setting(
        "which address of a launched instance this machine uses (session_manager: none, through SSM)"
    )
    ssh_keypair_name: str = ssh_keypair_name_setting(
        "existing EC2 key pair for the launched instances instead of the launch's own"
    )
    ssh_private_key_file: str = ssh_private_key_file_setting()
    volume_size: int = volume_size_setting("root volume size of launched instances (GiB)")
    kms_key_id: str = setting(
        "",
        _as_str,
        _matches(KMS_ARN_RE.pattern, empty_ok=True),
        "a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID or alias/NAME), or empty for the default EBS key",
        "KMS key that encrypts the launched instances' volumes (always encrypted)",
    )
    tags: tuple[tuple[str, str], ...] = tags_setting(
        "tags for what the launch makes (instances, volumes, security group, key pair)"
    )
    cpu_quota: int = setting(
        0,
        _as_int,
        check_cpu_quota,
        f"0 (none) or a percent of one CPU, {MIN_CPU_QUOTA} up to 100 x this host's CPUs; --cloud local only",
        "--cloud local: the CPU each instance may use, as systemd's CPUQuota= (66: two thirds of a"
        " CPU), so that instances sharing this host measure as separate machines would; a cluster's"
        " scale-out takes its controller's",
    )
    role: str = setting(
        "standalone",
        _as_str,
        check_role,
        "standalone, controller or worker (controller and worker: --cloud local only; on AWS a cluster"
        " is launched whole with --workers N)",
        "the instance's role, given to it as user data (README 'Scaling out')",
    )
    cluster: str = setting(
        "",
        _as_str,
        check_cluster,
        f"{layout.CLUSTER_NAME_FORM} (needed by --role controller|worker)",
        "the cluster a controller or worker belongs to",
    )
    workers: int = setting(
        0,
        _as_int,
        _between(0, MAX_WORKERS),
        f"a whole number 0-{MAX_WORKERS}",
        "a controller and this many workers instead of one standalone instance"
        " (their Auto Scaling group's DesiredCapacity); scale: the new number of workers",
    )
    min_workers: int = setting(
        1,
        _as_int,
        check_min_workers,
        f"a whole number 1-{MAX_WORKERS}, at most --workers",
        "the fewest workers the cluster's Auto Scaling group keeps (MinSize): its scaling policy"
        " moves the count between --min-workers and --max-workers",
    )
    max_workers: int = setting(
        MAX_WORKERS,
        _as_int,
        check_max_workers,
        f"a whole number up to {MAX_WORKERS}, at least --workers and --min-workers",
        "the most workers the cluster's Auto Scaling group runs (MaxSize)",
    )
    worker_iam_instance_profile: str = setting(
        "",
        _as_str,
        check_worker_iam_instance_profile,
        "an instance profile name other than iam_instance_profile; required for a cluster on AWS",
        "--cloud aws --workers N: the workers' instance profile, which reads their own secrets and"
        " the DAG bundle and writes neither (README 'Scaling out')",
    )
    worker_concurrency: int = setting(
        0,
        _as_int,
        _between(0, contract.MAX_WORKER_CONCURRENCY),
        f"a whole number 0-{contract.MAX_WORKER_CONCURRENCY} (0: Airflow's default, 16)",
        "tasks one worker runs at once (user data worker_concurrency)",
    )
    dags_s3_uri: str = setting(
        "",
        _as_str,
        check_dags_s3_uri,
        "s3://BUCKET[/PREFIX] holding at least one object; needed for a cluster on AWS",
        "--cloud aws: the S3 DAG bundle every node of the cluster reads (user data dags_s3_uri)",
    )
    allow_cidr: tuple[str, ...] = setting(
        (),
        _as_list,
        check_cidrs,
        "comma-separated CIDRs such as 203.0.113.7/32",
        "--cloud aws: who may reach SSH and the API port (empty: no inbound rule;"
        " reach the instance through SSM port forwarding)",
    )
    deployment: str = setting(
        "",
        _as_str,
        check_deployment,
        f"{layout.CLUSTER_NAME_FORM}; a cluster's is its --cluster",
        "a named deployment: its secrets (fernet keys, admin password, ...) and backups outlive its"
        " instances (README 'Upgrading to a new AMI'); empty: this instance's own",
    )
    restore: str = setting(
        "",
        _as_str,
        check_restore,
        "latest (the deployment's newest backup), the s3:// URI of a dump (.sql.gz), or empty",
        "a dump the new instance loads before any Airflow service starts",
    )
    backup_s3_uri: str = setting(
        "",
        _as_str,
        _matches(contract.S3_URI_PATTERN, empty_ok=True),
        "s3://BUCKET[/PREFIX] (a valid bucket name), or empty for the image's",
        "where this launch's dumps go (under <deployment or instance id>/)",
    )
    backup_interval_minutes: int = setting(
        0,
        _as_int,
        check_backup_interval,
        f"0 (the image's) or {contract.MIN_BACKUP_INTERVAL_MINUTES}-{contract.MAX_BACKUP_INTERVAL_MINUTES}",
        "how often this launch's instance dumps its database",
    )
    task_logs_s3_uri: str = setting(
        "",
        _as_str,
        _matches(contract.S3_URI_PATTERN, empty_ok=True),
        "s3://BUCKET[/PREFIX] (a valid bucket name), or empty for the image's"
        " (a cluster's: its DAG bucket's task-logs/)",
        "where this launch's task logs go (README 'Task logs')",
    )

    @staticmethod
    def complete(values: Mapping[str, Any]) -> dict[str, Any]:
        """--workers N without --cluster: the default cluster."""
        return {"cluster": values["cluster"] or (DEFAULT_REHEARSAL_CLUSTER if values["workers"] else "")}
