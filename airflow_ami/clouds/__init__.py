"""The clouds the pipeline bakes in and launches on: one interface, two implementations.

`aws` (aws.py, with its boto3 clients in ec2.py) is the real thing; `local`
(local/) plays it on this machine. The pipeline (lifecycle.py) is the same for
both: a cloud provides the build host Packer provisions and keeps the image
after the build, reads an AMI's tags, launches instances of an AMI, lists and
removes them. What an image decided at bake time reaches every launch step as
a `Baked` (airflow_ami/image/record.py), never as a launch flag.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from airflow_ami.seam import contract, layout
from airflow_ami.settings import BakeSettings, LaunchSettings, Target

if TYPE_CHECKING:
    from airflow_ami.image.record import Baked


def cluster_ports(image: Baked) -> list[int]:
    """What a cluster's security group opens between its members, on EC2 and in the
    local cloud: the broker, the execution API (the image's API port), the workers' log servers."""
    return [layout.REDIS_PORT, image.api_port, layout.WORKER_LOG_PORT]


# Where a cluster's task logs go when its launch names no place: its DAG bundle's bucket.
CLUSTER_TASK_LOGS_PREFIX = "task-logs"


def task_logs_location(settings: LaunchSettings, dags_s3_uri: str) -> str:
    """--task-logs-s3-uri, else for a cluster (whose workers come and go) a prefix of its
    DAG bucket; "" leaves it to the image's setting."""
    if settings.task_logs_s3_uri or not dags_s3_uri:
        return settings.task_logs_s3_uri
    bucket = dags_s3_uri[len("s3://") :].split("/", 1)[0]
    return f"s3://{bucket}/{CLUSTER_TASK_LOGS_PREFIX}/{settings.cluster}"


def launch_user_data(
    settings: LaunchSettings, role: str, dags_s3_uri: str, controller: str = "", autoscaling_group: str = ""
) -> str:
    """The user data of one instance of a launch, the same on both clouds ("" when it asks
    nothing): its role and cluster, its deployment, where its task logs go, (the database
    node's) backups and restore, and a worker's Auto Scaling group and the hook it completes
    when it leaves (README 'Scaling in')."""
    database_node = role != "worker"
    return contract.user_data(
        role,
        cluster=settings.cluster if role != "standalone" else "",
        dags_s3_uri=dags_s3_uri,
        controller=controller or None,
        worker_concurrency=settings.worker_concurrency if role == "worker" else None,
        deployment=settings.deployment if role == "standalone" else "",
        backup_s3_uri=settings.backup_s3_uri if database_node else "",
        backup_interval_minutes=settings.backup_interval_minutes if database_node else None,
        restore=settings.restore if database_node else "",
        task_logs_s3_uri=task_logs_location(settings, dags_s3_uri),
        autoscaling_group=autoscaling_group,
        lifecycle_hook=contract.LIFECYCLE_HOOK if autoscaling_group else "",
    )


@dataclass(frozen=True)
class InstanceRecord:
    """One launched instance, the same shape on every cloud (build/<name>/instance.json)."""

    cloud: str
    instance_id: str
    ami_id: str
    region: str
    address: str
    ssh_user: str
    ssh_key_file: str
    # standalone, or a controller / worker of `cluster` (README "Scaling out").
    role: str = "standalone"
    cluster: str = ""
    # The named deployment it serves (a cluster's is the cluster), "" for an instance of its own,
    # and the deployment's address while this instance holds it (an Elastic IP on AWS).
    deployment: str = ""
    deployment_address: str = ""
    # Its SSH host keys ("TYPE BASE64"), as the cloud reported them at launch (the console
    # output on AWS, the instance's own files in the local cloud): ssh trusts those only.
    host_keys: tuple[str, ...] = ()

    def as_record(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> InstanceRecord:
        found = {name: record[name] for name in cls.__dataclass_fields__ if name in record}
        found["host_keys"] = tuple(found.get("host_keys", ()))
        return cls(**found)


@dataclass
class BuildHost:
    """What a cloud hands the build: the settings Packer runs with (endpoint, SSH
    target), the environment of Packer and boto3, and what to do once an AMI exists."""

    settings: BakeSettings
    env: Mapping[str, str] | None = None
    keep_image: Callable[[dict[str, Any]], None] = lambda record: None
    timings: dict[str, float] = field(default_factory=dict)


class Cloud(Protocol):
    name: str

    def build_host(self, settings: BakeSettings) -> AbstractContextManager[BuildHost]:
        """The host Packer provisions, for the duration of one build; removed on exit."""
        ...

    def image_tags(self, target: Target, ami_id: str) -> dict[str, str]:
        """The AMI's tags (what it was baked with: airflow-ami:*)."""
        ...

    def client(self, target: Target, service: str) -> Any:
        """A boto3 client of the cloud's `service` (s3, ssm, secretsmanager) in the target's region."""
        ...

    def launch(self, settings: LaunchSettings, image: Baked) -> InstanceRecord: ...

    def launch_cluster(self, settings: LaunchSettings, image: Baked) -> list[InstanceRecord]:
        """A controller and --workers workers of --cluster; the controller first."""
        ...

    def launch_replacement(self, settings: LaunchSettings, image: Baked) -> InstanceRecord:
        """A standalone instance beside the launched one (an upgrade's new instance): in the
        same launch, without the deployment's address until move_address."""
        ...

    def api_url(self, target: Target, image: Baked, instance: InstanceRecord) -> str:
        """The instance's API base URL if this machine reaches it, else ""."""
        ...

    def scale(self, settings: LaunchSettings, count: int) -> str:
        """--cluster's workers to `count`; returns what was scaled."""
        ...

    def move_address(self, target: Target, instance: InstanceRecord) -> InstanceRecord:
        """The instance's deployment's address moves to it (allocated with the deployment's
        first launch); returns the instance as it is reached now."""
        ...

    def remove_instance(self, target: Target, instance: InstanceRecord) -> None:
        """Terminate one instance of what launch made (an upgrade's old or new one)."""
        ...

    def instances(self, target: Target) -> list[InstanceRecord]: ...

    def teardown(self, target: Target) -> list[str]:
        """Remove what launch started; returns a description of what went."""
        ...
