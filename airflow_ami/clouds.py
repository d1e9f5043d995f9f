"""The clouds the pipeline bakes in and launches on: one interface, two implementations.

`aws` (ec2.py) is the real thing; `local` (localcloud/) plays it on this machine.
The pipeline (lifecycle.py) is the same for both: a cloud provides the build
host Packer provisions and keeps the image after the build, launches instances
of an AMI, lists and removes them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from .layout import layout
from .settings import Settings


def cluster_ports(settings: Settings) -> list[int]:
    """What a cluster's security group opens between its members, on EC2 and in the
    local cloud: the broker, the execution API, the workers' log servers."""
    return [layout.REDIS_PORT, settings.api_port, layout.WORKER_LOG_PORT]


@dataclass(frozen=True)
class Instance:
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

    def as_record(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Instance:
        return cls(**{name: record[name] for name in cls.__dataclass_fields__ if name in record})


@dataclass
class BuildHost:
    """What a cloud hands the build: the settings Packer runs with (endpoint, SSH
    target), the environment of Packer and boto3, and what to do once an AMI exists."""

    settings: Settings
    env: Mapping[str, str] | None = None
    keep_image: Callable[[dict[str, Any]], None] = lambda record: None
    timings: dict[str, float] = field(default_factory=dict)


class Cloud(Protocol):
    name: str

    def build_host(self, settings: Settings) -> AbstractContextManager[BuildHost]:
        """The host Packer provisions, for the duration of one build; removed on exit."""
        ...

    def launch(self, settings: Settings, ami_id: str) -> Instance: ...

    def launch_cluster(self, settings: Settings, ami_id: str) -> list[Instance]:
        """A controller and --workers workers of --cluster; the controller first."""
        ...

    def api_url(self, settings: Settings, instance: Instance) -> str:
        """The instance's API base URL if this machine reaches it, else ""."""
        ...

    def scale(self, settings: Settings, count: int) -> str:
        """--cluster's workers to `count`; returns what was scaled."""
        ...

    def instances(self, settings: Settings) -> list[Instance]: ...

    def teardown(self, settings: Settings) -> list[str]:
        """Remove what launch started; returns a description of what went."""
        ...
