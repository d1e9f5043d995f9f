"""Bake settings: what the image is made of and how it is built.

Each field is declared once here (its default, parse, check, help, and where it
reaches: the AMI's tags, Packer's manifest, ami.json). What the instance is told
is settings.json, whose keys the instance's contract declares
(scripts/provisioning/shared/contract.py): :meth:`BakeSettings.instance_view`
writes exactly those keys, each a field's value or one of the derived values below.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from airflow_ami.seam import contract, layout
from airflow_ami.settings.fields import (
    AMI_NAME_SUFFIX_LEN,
    CONSTRAINTS_IN_BUNDLE,
    CONSTRAINTS_URL,
    EXTRA_CA_IN_BUNDLE,
    FINGERPRINT_RE,
    IMAGE,
    INDEX_URL_RE,
    MANIFEST,
    RECORD,
    REPO_ROOT,
    SHA256_RE,
    TAGS,
    URL_RE,
    VERSION_RE,
    _always,
    _as_bool,
    _as_int,
    _as_list,
    _as_str,
    _between,
    _check,
    _matches,
    _one_of,
    api_url,
    check_airflow_version,
    check_ami_name_prefix,
    check_ami_regions,
    check_ami_users,
    check_api_port,
    check_build_ssh_cidrs,
    check_ca_bundle,
    check_constraints,
    check_extra_packages,
    check_ip_address,
    check_kms_key_id,
    check_max_allowed_packet,
    check_mirror_url,
    check_parallelism,
    check_python_version,
    check_secret_name,
    check_source_ami_owners,
    declaration,
    fields_of,
    iam_instance_profile_setting,
    instance_type_setting,
    os_profiles,
    plain,
    setting,
    ssh_interface_setting,
    ssh_keypair_name_setting,
    ssh_private_key_file_setting,
    subnet_id_setting,
    tag_key,
    tags_setting,
    volume_size_setting,
)
from airflow_ami.settings.layers import systemd_of
from airflow_ami.settings.target import Target

# The image installs the uv this repository's tools are locked to (requirements.lock, which
# ./bake installs): one pin for both. uv_wheel_sha256's defaults are that release's wheels.
BACKUP_MINUTES = (contract.MIN_BACKUP_INTERVAL_MINUTES, contract.MAX_BACKUP_INTERVAL_MINUTES)
LOCK_FILE = REPO_ROOT / "requirements.lock"
LOCKED_UV = re.findall(r"^uv==([\d.]+) ", LOCK_FILE.read_text(), re.M)[0]


def check_unit_directives(value: str, s: Mapping[str, Any]) -> None:
    # Another profile's set is a rehearsal of that profile's sandbox on this OS, and only
    # a set this OS's systemd knows whole means what it means there.
    if value == "os":
        return
    _check(value in os_profiles() and s["cloud"] == "local")
    _check(systemd_of(value, s["arch"]) <= systemd_of(s["os"], s["arch"]))


@declaration
@dataclass(frozen=True, kw_only=True)
class BakeSettings(Target):
    """Validated settings of one build. Lists are tuples, tags sorted pairs.

    A declared default of None means every OS profile supplies the value.
    """

    instance_type: str = instance_type_setting("build instance type")
    vpc_id: str = setting(
        "",
        _as_str,
        _matches(r"^vpc-[0-9a-f]{8,17}$", empty_ok=True),
        "vpc- followed by 8-17 hex digits, or empty",
        "VPC of the build instance",
    )
    subnet_id: str = subnet_id_setting("subnet of the build instance (default: the default VPC's)")
    ssh_interface: str = ssh_interface_setting("how Packer reaches the build instance")
    iam_instance_profile: str = iam_instance_profile_setting("instance profile of the build instance")
    ssh_cidrs: tuple[str, ...] = setting(
        (),
        _as_list,
        check_build_ssh_cidrs,
        "comma-separated CIDRs such as 203.0.113.0/24; needed with ssh_interface private_ip",
        "CIDRs allowed to SSH to the build instance, such as CI runners' (empty: the public address"
        " Packer sees this host at)",
    )
    ssh_username: str = setting(
        None,
        _as_str,
        _matches(r"^[a-z_][a-z0-9_-]{0,31}$"),
        "a Unix user name",
        "SSH user of the base image (and so of the instances launched from the image)",
        reaches=(IMAGE,),
    )
    ssh_host: str = setting(
        "",
        _as_str,
        _matches(r"^[A-Za-z0-9.:-]{1,253}$", empty_ok=True),
        "a host name or IP address, or empty",
        "override the address Packer connects to (local clouds, bastions)",
    )
    ssh_port: int = setting(
        22, _as_int, _between(1, 65535), "a port number 1-65535", "SSH port of the build instance"
    )
    ssh_private_key_file: str = ssh_private_key_file_setting()
    ssh_keypair_name: str = ssh_keypair_name_setting("existing EC2 key pair instead of a temporary one")
    kms_key_id: str = setting(
        "",
        _as_str,
        check_kms_key_id,
        "a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID or alias/NAME), only with encrypt_boot true;"
        " or empty for the default EBS key",
        "KMS key that encrypts the AMI's snapshots",
    )
    encrypt_boot: bool = setting(True, _as_bool, _always, "true or false", "encrypt the AMI's root volume")
    volume_size: int = volume_size_setting("root volume size of the image (GiB)")
    ami_name_prefix: str = setting(
        "airflow",
        _as_str,
        check_ami_name_prefix,
        f"3-{128 - AMI_NAME_SUFFIX_LEN} characters of A-Z a-z 0-9 ( ) [ ] space . / - ' @ _",
        "AMI name prefix; the name adds version, OS, arch and time",
        # prune-amis picks this pipeline's AMIs by this tag, never by the name.
        reaches=(TAGS,),
    )
    tags: tuple[tuple[str, str], ...] = tags_setting("tags for the AMI, its snapshots and the build instance")
    ami_regions: tuple[str, ...] = setting(
        (),
        _as_list,
        check_ami_regions,
        "comma-separated AWS regions such as eu-west-1,us-west-2, each once and not the build region",
        "extra regions to copy the AMI to",
    )
    ami_users: tuple[str, ...] = setting(
        (),
        _as_list,
        check_ami_users,
        "comma-separated 12-digit AWS account ids; with encrypt_boot also a customer-managed"
        " kms_key_id (AWS cannot share AMIs encrypted with the default EBS key)",
        "accounts to share the AMI with",
    )
    source_ami_owners: tuple[str, ...] = setting(
        None,
        _as_list,
        check_source_ami_owners,
        "comma-separated 12-digit account ids or amazon/self/aws-marketplace",
        "owners in the base AMI filter",
    )
    source_ami_name: str = setting(
        None,
        _as_str,
        _matches(r"^[A-Za-z0-9()\[\] ./'@_*?{}-]{3,128}$"),
        "an AMI name pattern (* and ? wildcards)",
        "name pattern of the base AMI filter",
    )
    airflow_version: str = setting(
        "3.3.2",
        _as_str,
        check_airflow_version,
        "an Airflow release X.Y.Z from 3.0.0 to 3.3.x",
        "Airflow version",
        reaches=(TAGS, MANIFEST, RECORD),
    )
    python_version: str = setting(
        "auto",
        _as_str,
        check_python_version,
        "auto or a Python minor the Airflow version supports (3.11-3.14 for 3.3)",
        "Python for Airflow: auto uses the system python3 when >= 3.11, else a uv-managed 3.12",
        reaches=(MANIFEST, RECORD),
    )
    mysql_version: str = setting(
        "8.4",
        _as_str,
        _matches(r"^(8\.0|8\.4|9\.\d{1,2})$"),
        "8.0, 8.4 or 9.N",
        "MySQL server series (where the OS ships its own, that one is used)",
        reaches=(MANIFEST, RECORD),
    )
    max_allowed_packet: str = setting(
        "64M",
        _as_str,
        check_max_allowed_packet,
        "a size from 16M to 1G written like 64M",
        "MySQL max_allowed_packet (bounds XCom size)",
    )
    parallelism: str = setting(
        "auto",
        _as_str,
        check_parallelism,
        f"auto or a whole number 1-{contract.MAX_PARALLELISM}",
        "Airflow [core] parallelism; auto sizes it to the instance's CPUs and memory at first boot",
    )
    extra_python_packages: tuple[str, ...] = setting(
        (),
        _as_list,
        check_extra_packages,
        "comma-separated requirements such as apache-airflow-providers-http==5.3.0;"
        " apache-airflow(-core) only as airflow_version allows, apache-airflow-task-sdk not at all",
        "extra Python packages in Airflow's venv",
    )
    constraints: str = setting(
        "official",
        _as_str,
        check_constraints,
        "official, or the path of a constraints file inside this repository",
        "pip constraints for the Airflow install (official: Airflow's published file)",
    )
    index_url: str = setting(
        "",
        _as_str,
        _matches(INDEX_URL_RE.pattern, empty_ok=True),
        "an http(s) URL of an optional user:token@, a host, port and path (letters, digits and"
        " . _ ~ % / -), or empty for PyPI",
        "Python package index for the instance",
    )
    os_mirror: str = setting(
        "",
        _as_str,
        check_mirror_url,
        "an http(s) URL of a host, port and path (letters, digits and . _ ~ % / -),"
        " or empty for the distribution's default",
        "OS package mirror for the instance",
    )
    extra_ca_bundle: str = setting(
        "",
        _as_str,
        check_ca_bundle,
        "the path of an existing PEM file with certificates and no private key, or empty",
        "extra CA certificates the instance trusts (builds behind a TLS proxy)",
    )
    api_port: int = setting(
        8080,
        _as_int,
        check_api_port,
        "a port number 1024-65535 that the image does not use itself"
        f" ({', '.join(f'{what} {port}' for what, port in layout.IMAGE_PORTS.items())})",
        "Airflow API server port",
        reaches=(IMAGE,),
    )
    api_host: str = setting(
        "0.0.0.0",
        _as_str,
        check_ip_address,
        "an IPv4 or IPv6 address of the instance, 0.0.0.0 or :: for all, 127.0.0.1 for none outside",
        "address the API server listens on (the UI too)",
    )
    api_tls: str = setting(
        "none",
        _as_str,
        _one_of("none", "self-signed"),
        "none or self-signed",
        "none: plain HTTP (put TLS in front, e.g. an ALB); self-signed: first boot makes a"
        " certificate for the instance and the API serves HTTPS",
        reaches=(IMAGE,),
    )
    admin_username: str = setting(
        "admin",
        _as_str,
        _matches(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$"),
        "a user name of letters, digits, _ . -",
        "Airflow admin user made at first boot",
        reaches=(IMAGE,),
    )
    admin_password_store: str = setting(
        "none",
        _as_str,
        _one_of("none", "ssm", "secretsmanager"),
        "none, ssm or secretsmanager",
        "where first boot also stores the admin password",
        reaches=(IMAGE,),
    )
    admin_password_name: str = setting(
        "/airflow/admin-password",
        _as_str,
        check_secret_name,
        "an SSM parameter / secret name such as /airflow/admin-password: up to 500 of"
        " A-Z a-z 0-9 _ . - in /-separated parts, not starting with aws or ssm",
        "name of the stored admin password",
        reaches=(IMAGE,),
    )
    keep_build_sources: bool = setting(
        False,
        _as_bool,
        _always,
        "true or false",
        "keep the build's extra CA, os_mirror and index_url in the image (default: removed at cleanup)",
    )
    log_retention_days: int = setting(
        30,
        _as_int,
        _between(1, 3650),
        "a number of days from 1 to 3650",
        "task and dag-processor logs older than this are pruned (daily timer)",
    )
    db_retention_days: int = setting(
        90,
        _as_int,
        _between(1, 3650),
        "a number of days from 1 to 3650",
        "`airflow db clean` removes metadata (runs, task instances, logs) older than this (daily timer)",
    )
    backup_retention_days: int = setting(
        7,
        _as_int,
        _between(1, 3650),
        "a number of days from 1 to 3650",
        "daily database dumps in /var/backups/airflow older than this are pruned (the newest is kept)",
    )
    backup_s3_uri: str = setting(
        "",
        _as_str,
        _matches(contract.S3_URI_PATTERN, empty_ok=True),
        "s3://BUCKET[/PREFIX] (a valid bucket name), or empty for local dumps only",
        "where each dump is also put (under <deployment or instance id>/), with the instance role's"
        " credentials; a launch may name another",
    )
    backup_interval_minutes: int = setting(
        60,
        _as_int,
        _between(*BACKUP_MINUTES),
        f"a whole number of minutes {BACKUP_MINUTES[0]}-{BACKUP_MINUTES[1]}",
        "how often the database is dumped (the recovery point: at most this much is lost with an"
        " instance); a launch may choose another",
    )
    cloudwatch_metrics: bool = setting(
        True,
        _as_bool,
        _always,
        "true or false",
        "ship Airflow's StatsD metrics and each instance's CPU and memory to CloudWatch"
        " (README 'Metrics'; the instance role needs cloudwatch:PutMetricData)",
    )
    task_logs_s3_uri: str = setting(
        "",
        _as_str,
        _matches(contract.S3_URI_PATTERN, empty_ok=True),
        "s3://BUCKET[/PREFIX] (a valid bucket name), or empty for logs on the instance only",
        "where every task's log goes (Airflow's S3 task handler, with the instance role), read back"
        " by the UI and API after its instance is gone; a launch may name another",
    )
    uv_version: str = setting(
        LOCKED_UV,
        _as_str,
        _matches(VERSION_RE.pattern),
        "a uv release X.Y.Z",
        "uv, which installs Airflow on the build instance (its wheel is pinned by uv_wheel_sha256)",
    )
    uv_wheel_sha256: str = setting(
        {
            "x86_64": "d7f459fe4fd247d830351c75686d3996ace3c6f3f728eb0e85a30b7ada0cef19",
            "arm64": "5435c5ce14a56431208ca0996416d310f1598e8c2c8ba707688985a16bb82dbe",
        },
        _as_str,
        _matches(SHA256_RE.pattern),
        "64 lower-case hex digits",
        "sha256 of uv_version's manylinux wheel on PyPI for the arch; a download that differs fails",
        by_arch=True,
    )
    mysql_signing_key_fingerprint: str = setting(
        "BCA43417C3B485DD128EC6D4B7B3B788A8D3785C",
        _as_str,
        _matches(FINGERPRINT_RE.pattern),
        "40 upper-case hex digits",
        "OpenPGP fingerprint that Oracle's MySQL repository key (and so its release package) must match",
    )
    secret_store: str = setting(
        "ssm",
        _as_str,
        _one_of(*contract.SECRET_STORES),
        " or ".join(contract.SECRET_STORES),
        "where a named deployment (a cluster too) keeps the secrets that outlive its instances (one"
        " SecureString /airflow-ami/<deployment>/secrets, or a secret of that name without the leading /)",
    )
    aws_endpoint_url: str = setting(
        "",
        _as_str,
        _matches(URL_RE.pattern, empty_ok=True),
        "an http(s) URL, or empty for AWS",
        "endpoint of the AWS APIs the instance itself calls (S3 backups, SSM/Secrets Manager);"
        " empty: AWS's regional endpoints; the local cloud sets its moto",
    )
    unit_directives: str = setting(
        "os",
        _as_str,
        check_unit_directives,
        "os, or (--cloud local only) an OS profile whose systemd is no newer than this OS's"
        " (amazon-linux-2, amazon-linux-2023, debian)",
        "sandbox directives of the image's units (provisioning/bake/templates/unit-directives.yaml):"
        " os, those its own systemd knows; a profile's name rehearses that profile's set on this OS"
        " (amazon-linux-2: systemd 219's)",
        reaches=(RECORD,),
    )
    dry_run: bool = setting(
        False,
        _as_bool,
        _always,
        "true or false",
        "provisioning logs its steps and changes nothing",
    )

    def reaching(self, target: str) -> dict[str, Any]:
        """{field: value} of the fields declared to reach `target` (lists as lists); IMAGE
        fields reach the tags and the record too."""
        implied = {TAGS: IMAGE, RECORD: IMAGE}

        def reaches(names: frozenset[str]) -> bool:
            return target in names or implied.get(target, target) in names

        return {f.name: plain(getattr(self, f.name)) for f in fields_of(type(self)) if reaches(f.reaches)}

    def instance_view(self) -> dict[str, Any]:
        """settings.json: every key of the contract's SETTINGS, and only those."""
        view: dict[str, Any] = {"_generated": "Generated by airflow-ami render; do not edit."}
        for key in contract.SETTINGS:
            view[key] = DERIVED[key](self) if key in DERIVED else plain(getattr(self, key))
        return view

    def ami_tags(self) -> dict[str, str]:
        """The user's tags plus airflow-ami:<field> for the fields on the image."""
        ours = {tag_key(name): str(v) for name, v in self.reaching(TAGS).items()}
        return {**dict(self.tags), **ours}


def _local_api(s: BakeSettings) -> str:
    """Where clients on the instance itself reach the API."""
    local = "127.0.0.1" if s.api_host in ("0.0.0.0", "::") else s.api_host
    return api_url(s.api_tls, s.api_port, local)


# settings.json keys that are not a field's own value.
DERIVED: dict[str, Callable[[BakeSettings], Any]] = {
    "constraints_url": lambda s: (
        CONSTRAINTS_URL.format(airflow=s.airflow_version) if s.constraints == "official" else ""
    ),
    "constraints_file": lambda s: "" if s.constraints == "official" else CONSTRAINTS_IN_BUNDLE,
    "extra_ca_bundle": lambda s: EXTRA_CA_IN_BUNDLE if s.extra_ca_bundle else "",
    "api_url": _local_api,
    # The release whose directive set the units carry: the OS's own, or the rehearsed profile's.
    "unit_directives_systemd": lambda s: systemd_of(
        s.os if s.unit_directives == "os" else s.unit_directives, s.arch
    ),
    "os_facts": lambda s: s.os_facts._asdict(),
}
