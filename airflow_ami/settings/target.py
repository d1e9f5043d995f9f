"""Which build, on which cloud and where: the settings every task that touches a cloud takes.

`os`, `arch` and `cloud` also choose the settings layers (layers.py) and the
build directory's default name; a task that reads a build's records (launch,
status, teardown, ...) names the build with them or with `build_name`.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

from airflow_ami.seam import contract
from airflow_ami.settings.fields import (
    ARCHES,
    IMAGE,
    MANIFEST,
    RECORD,
    REGION_RE,
    TAGS,
    URL_RE,
    _as_str,
    _clouds,
    _dynamic_choice,
    _matches,
    _one_of,
    declaration,
    os_profiles,
    setting,
)


@dataclass(frozen=True)
class EndOfSupport:
    """When an OS profile's vendor stops supporting it, and what to build instead."""

    date: str
    instead: str

    def warning(self, os_name: str, today: datetime.date) -> str | None:
        if today <= datetime.date.fromisoformat(self.date):
            return None
        return (
            f"warning: {os_name} reached its end of support on {self.date};"
            f" build --os {self.instead} unless you need {os_name}"
        )


@declaration
@dataclass(frozen=True, kw_only=True)
class Target:
    """Validated settings naming a build and its cloud. Lists are tuples."""

    os: str = setting(
        "amazon-linux-2",
        _as_str,
        _dynamic_choice(os_profiles),
        "one of the OS profiles in airflow_ami/settings/profiles/ (amazon-linux-2, amazon-linux-2023,"
        " debian)",
        "OS profile of the image",
        reaches=(TAGS, MANIFEST, RECORD, IMAGE),
    )
    cloud: str = setting(
        "aws",
        _as_str,
        _dynamic_choice(_clouds),
        "aws or local",
        "where to build and launch: real AWS, or the local rehearsal cloud",
    )
    arch: str = setting(
        "x86_64",
        _as_str,
        _one_of(*ARCHES),
        "x86_64 or arm64",
        "CPU architecture",
        reaches=(TAGS, MANIFEST, RECORD, IMAGE),
    )
    region: str = setting(
        "us-east-1",
        _as_str,
        _matches(REGION_RE.pattern),
        "an AWS region such as us-east-1",
        "AWS region",
        reaches=(RECORD,),
    )
    profile: str = setting(
        "",
        _as_str,
        _matches(r"^[A-Za-z0-9_.+-]{1,64}$", empty_ok=True),
        "a profile name of the AWS config files, or empty for boto3's default chain",
        "AWS profile every AWS call of the pipeline uses (credentials stay in the AWS config)",
    )
    ec2_endpoint: str = setting(
        "",
        _as_str,
        _matches(URL_RE.pattern, empty_ok=True),
        "an http(s) URL, or empty for AWS",
        "EC2 API endpoint (a local API such as moto)",
    )
    build_name: str = setting(
        "",
        _as_str,
        _matches(r"^([a-z0-9][a-z0-9._-]{0,62})?$"),
        "lower-case letters, digits, . _ and -",
        "build directory name under build/ (default: <os>-<arch>, plus -<cloud> off AWS)",
    )
    # From the OS profile's layer, not settings.
    os_facts: contract.OsFacts = field(default=None)  # type: ignore[assignment]
    end_of_support: EndOfSupport | None = None
