"""Build settings: one declaration per field, layered sources, strict validation.

Each field of :class:`Settings` is declared once, with `setting(...)`: its
default, how a raw value is parsed and checked, its help text, and where it
reaches (the instance's settings.json, the AMI's tags, Packer's manifest, the
build record ami.json). Everything else (CLI flags, env variables, the views
written by render and build) is derived from these declarations.

Layers, lowest first: the declared defaults < ``packer/profiles/<os>.yaml``
< ``packer/clouds/<cloud>.yaml`` < invoke config (``invoke.yaml`` key ``ami``,
env ``INVOKE_AMI_<FIELD>``) < CLI flags. A layer may give a value as a mapping
by architecture (``{x86_64: ..., arm64: ...}``) for the fields declared
``by_arch``. Every value is checked before anything runs; the first bad one
raises :class:`SettingsError` naming the field and the allowed form.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from .layout import layout

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKER_DIR = REPO_ROOT / "packer"

# Airflow minor -> the Python minors it supports (upstream's support matrix).
AIRFLOW_PYTHONS: dict[tuple[int, int], tuple[str, ...]] = {
    (3, 0): ("3.9", "3.10", "3.11", "3.12"),
    (3, 1): ("3.10", "3.11", "3.12", "3.13"),
    (3, 2): ("3.10", "3.11", "3.12", "3.13"),
    # Airflow 3.3's core takes 3.10, but its providers (mysql, fab, amazon, ...) need 3.11.
    (3, 3): ("3.11", "3.12", "3.13", "3.14"),
}
ARCHES = ("x86_64", "arm64")
CONSTRAINTS_URL = (
    "https://raw.githubusercontent.com/apache/airflow/constraints-{airflow}/constraints-{{python_minor}}.txt"
)
# Packer's {{timestamp}}-style suffix appended to the prefix: -<version>-<os>-<arch>-YYYYMMDDhhmmss
AMI_NAME_SUFFIX_LEN = len("-3.3.2-amazon-linux-2023-x86_64-20260101000000")


class SettingsError(ValueError):
    """A bad value: names the field and the form it must take."""

    def __init__(self, name: str, allowed: str, value: object = None) -> None:
        shown = "" if value is None else f" (got {value!r})"
        super().__init__(f"setting {name}: must be {allowed}{shown}")
        self.field = name


# ---- value parsers: raw layer value -> typed value, or raise ValueError ----


def _as_str(raw: object) -> str:
    if isinstance(raw, (list, dict, bool)):
        raise ValueError
    return "" if raw is None else str(raw).strip()


def _as_int(raw: object) -> int:
    if isinstance(raw, bool):
        raise ValueError
    return int(str(raw).strip())


def _as_bool(raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("true", "yes", "1", "on"):
        return True
    if text in ("false", "no", "0", "off"):
        return False
    raise ValueError


def _as_list(raw: object) -> tuple[str, ...]:
    if raw is None or raw == "":
        return ()
    if isinstance(raw, str):
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    if isinstance(raw, (list, tuple)):
        return tuple(_as_str(item) for item in raw)
    raise ValueError


def _as_tags(raw: object) -> tuple[tuple[str, str], ...]:
    if raw is None or raw == "":
        return ()
    if isinstance(raw, str):
        pairs = []
        for part in _as_list(raw):
            key, sep, value = part.partition("=")
            if not sep:
                raise ValueError
            pairs.append((key.strip(), value.strip()))
        return tuple(sorted(pairs))
    if isinstance(raw, Mapping):
        return tuple(sorted((_as_str(k), _as_str(v)) for k, v in raw.items()))
    raise ValueError


# ---- checks: typed value (+ the other settings) -> ok, or raise ValueError ----

REGION_RE = re.compile(
    r"^(us|eu|ap|sa|ca|me|af|il|mx|cn)(-gov|-iso[a-z]?)?-"
    r"(north|south|east|west|central|northeast|southeast|northwest|southwest)-\d{1,2}$"
)
INSTANCE_TYPE_RE = re.compile(
    r"^[a-z][a-z0-9-]*\d[a-z0-9-]*\.(nano|micro|small|medium|large|\d{0,2}xlarge|metal(-\d+xl)?)$"
)
# Graviton families carry a "g" right after the generation digit (t4g, m7gd, c6gn, ...).
ARM_FAMILY_RE = re.compile(r"^(a1|[a-z]+\d+g[a-z]*)\.")
AMI_NAME_RE = re.compile(r"^[A-Za-z0-9()\[\] ./'@_-]+$")
TAG_KEY_RE = re.compile(r"^[\w .:/=+@-]{1,128}$")
KMS_ARN_RE = re.compile(
    r"^arn:aws(-[a-z]+)*:kms:[a-z0-9-]+:\d{12}:(key/[0-9a-f-]{36}|alias/[A-Za-z0-9/_-]{1,250})$"
)
ACCOUNT_RE = re.compile(r"^\d{12}$")
OWNER_RE = re.compile(r"^(\d{12}|amazon|self|aws-marketplace)$")
VERSION_RE = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")
SIZE_RE = re.compile(r"^(\d+)([KMG])$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
# A mirror URL goes into repository files and regex replacements on the instance:
# no credentials, backslashes, query strings or regex characters.
MIRROR_URL_RE = re.compile(r"^https?://[A-Za-z0-9.-]+(:\d{1,5})?(/[A-Za-z0-9._~%/-]*)?$")
# A package index may need a token (https://user:TOKEN@host/simple): never printed, never baked.
INDEX_URL_RE = re.compile(
    r"^https?://([A-Za-z0-9._~%!$&'()*+,;=-]+(:[A-Za-z0-9._~%!$&'()*+,;=-]+)?@)?"
    r"[A-Za-z0-9.-]+(:\d{1,5})?(/[A-Za-z0-9._~%/-]*)?$"
)
USERINFO_RE = re.compile(r"//[^/@\s]*@")
SECRET_NAME_RE = re.compile(r"^/?[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")
# AWS allows 50 tags on a resource; the pipeline adds its own airflow-ami:* tags and a Name.
MAX_TAGS = 50
MAX_PARALLELISM = 1024
FINGERPRINT_RE = re.compile(r"^[0-9A-F]{40}$")
URL_RE = re.compile(r"^https?://[A-Za-z0-9.-]+(:\d+)?(/[^\s]*)?$")
REQUIREMENT_RE = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9,._-]+\])?"
    r"((==|>=|<=|~=|!=|<|>)[A-Za-z0-9.*+!-]+(,(==|>=|<=|~=|!=|<|>)[A-Za-z0-9.*+!-]+)*)?$"
)
SIZE_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def _check(ok: bool) -> None:
    if not ok:
        raise ValueError


def _profiles() -> tuple[str, ...]:
    return tuple(sorted(p.stem for p in (PACKER_DIR / "profiles").glob("*.yaml")))


def _clouds() -> tuple[str, ...]:
    return tuple(sorted(p.stem for p in (PACKER_DIR / "clouds").glob("*.yaml")))


def _repo_file(path: str) -> bool:
    candidate = (REPO_ROOT / path).resolve()
    return candidate.is_file() and candidate.is_relative_to(REPO_ROOT)


def _airflow_minor(version: str) -> tuple[int, int]:
    match = VERSION_RE.match(version)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def check_instance_type(value: str, s: Mapping[str, Any]) -> None:
    _check(bool(INSTANCE_TYPE_RE.match(value)))
    _check(bool(ARM_FAMILY_RE.match(value)) == (s["arch"] == "arm64"))


def check_airflow_version(value: str, _: Mapping[str, Any]) -> None:
    _check(bool(VERSION_RE.match(value)) and _airflow_minor(value) in AIRFLOW_PYTHONS)


def check_source_ami_owners(value: tuple[str, ...], _: Mapping[str, Any]) -> None:
    _check(bool(value) and all(OWNER_RE.match(owner) for owner in value))


def check_constraints(value: str, _: Mapping[str, Any]) -> None:
    _check(value == "official" or _repo_file(value))


def check_python_version(value: str, s: Mapping[str, Any]) -> None:
    _check(value == "auto" or value in AIRFLOW_PYTHONS.get(_airflow_minor(s["airflow_version"]), ()))


def check_ami_name_prefix(value: str, _: Mapping[str, Any]) -> None:
    _check(bool(AMI_NAME_RE.match(value)) and 3 <= len(value) <= 128 - AMI_NAME_SUFFIX_LEN)


def check_tags(value: tuple[tuple[str, str], ...], _: Mapping[str, Any]) -> None:
    ours = [f for f in FIELDS if TAGS in f.reaches]
    _check(len(value) + len(ours) + len(["Name"]) <= MAX_TAGS)
    for key, tag_value in value:
        _check(bool(TAG_KEY_RE.match(key)) and not key.lower().startswith(("aws:", TAG_PREFIX)))
        # Any Unicode is fine (it renders as UTF-8 HCL); control characters AWS refuses.
        _check(len(tag_value) <= 256 and not any(unicodedata.category(c) == "Cc" for c in tag_value))


def check_ami_regions(value: tuple[str, ...], s: Mapping[str, Any]) -> None:
    _check(all(REGION_RE.match(region) for region in value))
    _check(len(set(value)) == len(value) and s["region"] not in value)


def check_accounts(value: tuple[str, ...], _: Mapping[str, Any]) -> None:
    _check(all(ACCOUNT_RE.match(account) for account in value))


def check_ami_users(value: tuple[str, ...], s: Mapping[str, Any]) -> None:
    check_accounts(value, s)
    # AWS cannot share an AMI encrypted with the account's default EBS key.
    _check(not value or not s["encrypt_boot"] or bool(s["kms_key_id"]))


def check_kms_key_id(value: str, s: Mapping[str, Any]) -> None:
    _check(value == "" or (bool(KMS_ARN_RE.match(value)) and s["encrypt_boot"]))


def check_api_port(value: int, _: Mapping[str, Any]) -> None:
    _check(1024 <= value <= 65535 and value not in layout.IMAGE_PORTS.values())


def check_secret_name(value: str, _: Mapping[str, Any]) -> None:
    """What both SSM Parameter Store and Secrets Manager accept, and neither reserves."""
    _check(bool(SECRET_NAME_RE.match(value)) and len(value) <= 500)
    _check(not value.lstrip("/").lower().startswith(("aws", "ssm")))


def check_extra_packages(value: tuple[str, ...], s: Mapping[str, Any]) -> None:
    for requirement in value:
        _check(bool(REQUIREMENT_RE.match(requirement)))
        parsed = Requirement(requirement)
        name = canonicalize_name(parsed.name)
        # Airflow itself comes from airflow_version; its task SDK is versioned by that release.
        _check(name != "apache-airflow-task-sdk")
        if name in ("apache-airflow", "apache-airflow-core"):
            _check(parsed.specifier.contains(s["airflow_version"], prereleases=True))


def check_ip_address(value: str, _: Mapping[str, Any]) -> None:
    ipaddress.ip_address(value)


def check_parallelism(value: str, _: Mapping[str, Any]) -> None:
    _check(value == "auto" or (value.isdigit() and 1 <= int(value) <= MAX_PARALLELISM))


def check_mirror_url(value: str, _: Mapping[str, Any]) -> None:
    _check(value == "" or bool(MIRROR_URL_RE.match(value)))


def check_max_allowed_packet(value: str, _: Mapping[str, Any]) -> None:
    match = SIZE_RE.match(value)
    _check(bool(match))
    size = int(match.group(1)) * SIZE_UNITS[match.group(2)]
    _check((16 << 20) <= size <= (1 << 30))


def check_cidrs(value: tuple[str, ...], _: Mapping[str, Any]) -> None:
    for cidr in value:
        _check("/" in cidr)
        ipaddress.ip_network(cidr, strict=True)


def check_iam_instance_profile(value: str, s: Mapping[str, Any]) -> None:
    # A cluster's nodes share their secrets through SSM/Secrets Manager and read the
    # DAG bundle from S3, with their instance role.
    aws_cluster = s.get("cloud") == "aws" and s.get("workers", 0) > 0
    needed = s["ssh_interface"] == "session_manager" or aws_cluster
    _check(bool(re.match(r"^[\w+=,.@-]{1,128}$", value)) or (value == "" and not needed))


def check_keypair(value: str, s: Mapping[str, Any]) -> None:
    # A named key pair and its private key file come together or not at all.
    _check((value == "") == (s["ssh_private_key_file"] == ""))
    _check(value == "" or bool(re.match(r"^[\x20-\x7e]{1,255}$", value)))


def check_private_key_file(value: str, _: Mapping[str, Any]) -> None:
    _check(value == "" or Path(value).is_file())


def check_ca_bundle(value: str, _: Mapping[str, Any]) -> None:
    if value == "":
        return
    text = Path(value).read_text(errors="replace") if Path(value).is_file() else ""
    # Certificates only: a private key in it would be baked into every instance.
    _check("BEGIN CERTIFICATE" in text and "PRIVATE KEY" not in text)


def _one_of(*choices: str) -> Callable[[str, Mapping[str, Any]], None]:
    def check(value: str, _: Mapping[str, Any]) -> None:
        _check(value in choices)

    return check


def _dynamic_choice(choices: Callable[[], tuple[str, ...]]) -> Callable[[str, Mapping[str, Any]], None]:
    def check(value: str, _: Mapping[str, Any]) -> None:
        _check(value in choices())

    return check


def _matches(pattern: str, *, empty_ok: bool = False) -> Callable[[str, Mapping[str, Any]], None]:
    compiled = re.compile(pattern)

    def check(value: str, _: Mapping[str, Any]) -> None:
        _check((empty_ok and value == "") or bool(compiled.match(value)))

    return check


def _between(low: int, high: int) -> Callable[[int, Mapping[str, Any]], None]:
    def check(value: int, _: Mapping[str, Any]) -> None:
        _check(low <= value <= high)

    return check


DEFAULT_REHEARSAL_CLUSTER = "rehearsal"


S3_URI_PATTERN = r"^(s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[A-Za-z0-9!_.*'()/-]*)?)?$"


def check_dags_s3_uri(value: str, s: Mapping[str, Any]) -> None:
    # On AWS a cluster's nodes read their DAGs from this bundle; the local cloud makes its own.
    _check(bool(re.match(S3_URI_PATTERN, value)))
    standalone = s.get("workers", 0) == 0 and s.get("role") == "standalone"
    _check(bool(value) or s.get("cloud") != "aws" or standalone)


def check_role(value: str, s: Mapping[str, Any]) -> None:
    # On AWS the workers come from the launch's Auto Scaling group, never one by one.
    _check(value in layout.ROLES and (value == "standalone" or s.get("cloud") != "aws"))


def check_cluster(value: str, settings: Mapping[str, Any]) -> None:
    # A controller or worker belongs to a named cluster (verify and teardown name one too).
    named = bool(re.match(layout.CLUSTER_NAME_PATTERN, value))
    _check(named or (value == "" and settings.get("role", "standalone") == "standalone"))


def _always(_value: object, _settings: Mapping[str, Any]) -> None:
    return None


# Where a field's value goes besides the build itself.
INSTANCE = "instance"  # bundle/settings.json, /etc/airflow-ami/settings.json on the instance
TAGS = "tags"  # a tag airflow-ami:<field-name> on the AMI, its snapshots and the build instance
MANIFEST = "manifest"  # custom_data of Packer's manifest post-processor
RECORD = "record"  # build/<build-name>/ami.json
# Files a setting names on the host are copied into the bundle; the instance is told these paths.
CONSTRAINTS_IN_BUNDLE = "files/constraints.txt"
EXTRA_CA_IN_BUNDLE = "files/extra-ca.pem"
TAG_PREFIX = "airflow-ami:"


def tag_key(name: str) -> str:
    """The AMI tag a field declared to reach TAGS is written to."""
    return TAG_PREFIX + name.replace("_", "-")


@dataclass(frozen=True)
class Field:
    """How one setting is defaulted, parsed, checked, described, and where it reaches."""

    name: str
    default: Any
    parse: Callable[[object], Any]
    check: Callable[[Any, Mapping[str, Any]], None]
    allowed: str
    help: str
    reaches: frozenset[str]
    by_arch: bool
    # What the instance is told, when that is not just {name: value}.
    instance_view: Callable[[Settings], dict[str, Any]] | None


def setting(
    default: Any,
    parse: Callable[[object], Any],
    check: Callable[[Any, Mapping[str, Any]], None],
    allowed: str,
    help: str,
    *,
    reaches: tuple[str, ...] = (),
    by_arch: bool = False,
    instance_view: Callable[[Settings], dict[str, Any]] | None = None,
) -> Any:
    """Declare a settings field (used as the dataclass field's value)."""
    spec = {
        "default": default,
        "parse": parse,
        "check": check,
        "allowed": allowed,
        "help": help,
        "reaches": frozenset(reaches),
        "by_arch": by_arch,
        "instance_view": instance_view,
    }
    return field(metadata={"setting": spec})


def _constraints_view(s: Settings) -> dict[str, Any]:
    official = s.constraints == "official"
    return {
        "constraints_url": CONSTRAINTS_URL.format(airflow=s.airflow_version) if official else "",
        "constraints_file": "" if official else CONSTRAINTS_IN_BUNDLE,
    }


def api_url(s: Settings, address: str) -> str:
    """The API's base URL at `address` (an instance's own, or its address seen from outside)."""
    scheme = "https" if s.api_tls == "self-signed" else "http"
    return f"{scheme}://{f'[{address}]' if ':' in address else address}:{s.api_port}"


def _api_view(s: Settings) -> dict[str, Any]:
    """api_host, and api_url: where clients on the instance itself reach the API."""
    local = "127.0.0.1" if s.api_host in ("0.0.0.0", "::") else s.api_host
    return {"api_host": s.api_host, "api_url": api_url(s, local)}


def _extra_ca_view(s: Settings) -> dict[str, Any]:
    return {"extra_ca_bundle": EXTRA_CA_IN_BUNDLE if s.extra_ca_bundle else ""}


def _systemd_of(os_name: str, arch: str) -> int:
    return _profile_layer(os_name, arch)[1].systemd_version


def check_unit_directives(value: str, s: Mapping[str, Any]) -> None:
    # Another profile's set is a rehearsal of that profile's sandbox on this OS, and only
    # a set this OS's systemd knows whole means what it means there.
    if value == "os":
        return
    _check(value in _profiles() and s["cloud"] == "local")
    _check(_systemd_of(value, s["arch"]) <= _systemd_of(s["os"], s["arch"]))


def _unit_directives_view(s: Settings) -> dict[str, Any]:
    """unit_directives, and unit_directives_systemd: the release whose directive set the units carry."""
    profile = s.os if s.unit_directives == "os" else s.unit_directives
    return {"unit_directives": s.unit_directives, "unit_directives_systemd": _systemd_of(profile, s.arch)}


@dataclass(frozen=True)
class OsFacts:
    """Facts of an OS profile (packer/profiles/<os>.yaml `os_facts`), not choices."""

    package_manager: str
    mysql_unit: str
    mysql_socket: str
    mysql_datadir: str
    mysql_dropin: str
    ca_anchor: str
    ca_bundle: str
    # Decides which unit directives the image's units may use (packer/systemd.yaml).
    systemd_version: int
    # Redis, the Celery broker of a cluster's controller.
    redis_package: str
    redis_unit: str
    redis_server: str
    redis_user: str


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


@dataclass(frozen=True)
class Settings:
    """Validated settings of one build. Lists are tuples, tags sorted pairs.

    A declared default of None means every OS profile supplies the value.
    """

    os: str = setting(
        "amazon-linux-2",
        _as_str,
        _dynamic_choice(_profiles),
        "one of the OS profiles in packer/profiles/ (amazon-linux-2, amazon-linux-2023, debian)",
        "OS profile of the image",
        reaches=(INSTANCE, TAGS, MANIFEST, RECORD),
    )
    cloud: str = setting(
        "aws",
        _as_str,
        _dynamic_choice(_clouds),
        "aws or local",
        "where to build: real AWS, or the local rehearsal cloud",
    )
    arch: str = setting(
        "x86_64",
        _as_str,
        _one_of(*ARCHES),
        "x86_64 or arm64",
        "CPU architecture",
        reaches=(INSTANCE, TAGS, MANIFEST, RECORD),
    )
    region: str = setting(
        "us-east-1",
        _as_str,
        _matches(REGION_RE.pattern),
        "an AWS region such as us-east-1",
        "region to build in",
        reaches=(INSTANCE, RECORD),
    )
    instance_type: str = setting(
        None,
        _as_str,
        check_instance_type,
        "an EC2 instance type of the chosen arch, such as t3.large (x86_64) or t4g.large (arm64)",
        "build instance type",
        by_arch=True,
    )
    vpc_id: str = setting(
        "",
        _as_str,
        _matches(r"^vpc-[0-9a-f]{8,17}$", empty_ok=True),
        "vpc- followed by 8-17 hex digits, or empty",
        "VPC of the build instance",
    )
    subnet_id: str = setting(
        "",
        _as_str,
        _matches(r"^subnet-[0-9a-f]{8,17}$", empty_ok=True),
        "subnet- followed by 8-17 hex digits, or empty",
        "subnet of the build instance and of launched ones (default: the default VPC's)",
    )
    ssh_interface: str = setting(
        "public_ip",
        _as_str,
        _one_of("public_ip", "private_ip", "session_manager"),
        "public_ip, private_ip or session_manager",
        "how Packer reaches the build instance",
    )
    iam_instance_profile: str = setting(
        "",
        _as_str,
        check_iam_instance_profile,
        "an instance profile name (required with ssh_interface=session_manager, and for a cluster on AWS)",
        "instance profile of the build instance and of launched ones",
    )
    ssh_cidrs: tuple[str, ...] = setting(
        (),
        _as_list,
        check_cidrs,
        "comma-separated CIDRs such as 203.0.113.0/24",
        "CIDRs allowed to SSH to the build instance (empty: Packer's temporary security group default)",
    )
    ssh_username: str = setting(
        None,
        _as_str,
        _matches(r"^[a-z_][a-z0-9_-]{0,31}$"),
        "a Unix user name",
        "SSH user of the base image",
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
    ssh_private_key_file: str = setting(
        "",
        _as_str,
        check_private_key_file,
        "the path of an existing private key file, or empty",
        "private key of ssh_keypair_name",
    )
    ssh_keypair_name: str = setting(
        "",
        _as_str,
        check_keypair,
        "an EC2 key pair name, set together with ssh_private_key_file",
        "existing EC2 key pair instead of a temporary one",
    )
    kms_key_id: str = setting(
        "",
        _as_str,
        check_kms_key_id,
        "a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID or alias/NAME), only with encrypt_boot true;"
        " or empty for the default EBS key",
        "KMS key that encrypts the AMI's snapshots",
    )
    encrypt_boot: bool = setting(True, _as_bool, _always, "true or false", "encrypt the AMI's root volume")
    volume_size: int = setting(
        20,
        _as_int,
        _between(12, 16384),
        "a size in GiB from 12 to 16384 (the base image's 8 GiB, ~1.5 GiB of MySQL and Airflow,"
        " and room for logs and the database)",
        "root volume size (GiB)",
    )
    ami_name_prefix: str = setting(
        "airflow",
        _as_str,
        check_ami_name_prefix,
        f"3-{128 - AMI_NAME_SUFFIX_LEN} characters of A-Z a-z 0-9 ( ) [ ] space . / - ' @ _",
        "AMI name prefix; the name adds version, OS, arch and time",
        # prune-amis picks this pipeline's AMIs by this tag, never by the name.
        reaches=(TAGS,),
    )
    tags: tuple[tuple[str, str], ...] = setting(
        {},
        _as_tags,
        check_tags,
        f"KEY=VALUE pairs separated by commas, at most {MAX_TAGS} with the pipeline's own airflow-ami:*"
        " tags and Name; keys up to 128 characters of"
        " letters, digits, spaces and _ . : / = + - @, not starting with aws: or airflow-ami:;"
        " values up to 256 characters, no control characters",
        "tags for the AMI, its snapshots and the build instance",
    )
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
        reaches=(INSTANCE, TAGS, MANIFEST, RECORD),
    )
    python_version: str = setting(
        "auto",
        _as_str,
        check_python_version,
        "auto or a Python minor the Airflow version supports (3.11-3.14 for 3.3)",
        "Python for Airflow: auto uses the system python3 when >= 3.11, else a uv-managed 3.12",
        reaches=(INSTANCE, MANIFEST, RECORD),
    )
    mysql_version: str = setting(
        "8.4",
        _as_str,
        _matches(r"^(8\.0|8\.4|9\.\d{1,2})$"),
        "8.0, 8.4 or 9.N",
        "MySQL server series (where the OS ships its own, that one is used)",
        reaches=(INSTANCE, MANIFEST, RECORD),
    )
    max_allowed_packet: str = setting(
        "64M",
        _as_str,
        check_max_allowed_packet,
        "a size from 16M to 1G written like 64M",
        "MySQL max_allowed_packet (bounds XCom size)",
        reaches=(INSTANCE,),
    )
    parallelism: str = setting(
        "auto",
        _as_str,
        check_parallelism,
        f"auto or a whole number 1-{MAX_PARALLELISM}",
        "Airflow [core] parallelism; auto sizes it to the instance's CPUs and memory at first boot",
        reaches=(INSTANCE,),
    )
    extra_python_packages: tuple[str, ...] = setting(
        (),
        _as_list,
        check_extra_packages,
        "comma-separated requirements such as apache-airflow-providers-http==5.3.0;"
        " apache-airflow(-core) only as airflow_version allows, apache-airflow-task-sdk not at all",
        "extra Python packages in Airflow's venv",
        reaches=(INSTANCE,),
    )
    constraints: str = setting(
        "official",
        _as_str,
        check_constraints,
        "official, or the path of a constraints file inside this repository",
        "pip constraints for the Airflow install (official: Airflow's published file)",
        reaches=(INSTANCE,),
        instance_view=_constraints_view,
    )
    index_url: str = setting(
        "",
        _as_str,
        _matches(INDEX_URL_RE.pattern, empty_ok=True),
        "an http(s) URL of an optional user:token@, a host, port and path (letters, digits and"
        " . _ ~ % / -), or empty for PyPI",
        "Python package index for the instance",
        reaches=(INSTANCE,),
    )
    os_mirror: str = setting(
        "",
        _as_str,
        check_mirror_url,
        "an http(s) URL of a host, port and path (letters, digits and . _ ~ % / -),"
        " or empty for the distribution's default",
        "OS package mirror for the instance",
        reaches=(INSTANCE,),
    )
    extra_ca_bundle: str = setting(
        "",
        _as_str,
        check_ca_bundle,
        "the path of an existing PEM file with certificates and no private key, or empty",
        "extra CA certificates the instance trusts (builds behind a TLS proxy)",
        reaches=(INSTANCE,),
        instance_view=_extra_ca_view,
    )
    api_port: int = setting(
        8080,
        _as_int,
        check_api_port,
        "a port number 1024-65535 that the image does not use itself"
        f" ({', '.join(f'{what} {port}' for what, port in layout.IMAGE_PORTS.items())})",
        "Airflow API server port",
        reaches=(INSTANCE, RECORD),
    )
    api_host: str = setting(
        "0.0.0.0",
        _as_str,
        check_ip_address,
        "an IPv4 or IPv6 address of the instance, 0.0.0.0 or :: for all, 127.0.0.1 for none outside",
        "address the API server listens on (the UI too)",
        reaches=(INSTANCE,),
        instance_view=_api_view,
    )
    api_tls: str = setting(
        "none",
        _as_str,
        _one_of("none", "self-signed"),
        "none or self-signed",
        "none: plain HTTP (put TLS in front, e.g. an ALB); self-signed: first boot makes a"
        " certificate for the instance and the API serves HTTPS",
        reaches=(INSTANCE, RECORD),
    )
    admin_username: str = setting(
        "admin",
        _as_str,
        _matches(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$"),
        "a user name of letters, digits, _ . -",
        "Airflow admin user made at first boot",
        reaches=(INSTANCE, RECORD),
    )
    admin_password_store: str = setting(
        "none",
        _as_str,
        _one_of("none", "ssm", "secretsmanager"),
        "none, ssm or secretsmanager",
        "where first boot also stores the admin password",
        reaches=(INSTANCE, RECORD),
    )
    admin_password_name: str = setting(
        "/airflow/admin-password",
        _as_str,
        check_secret_name,
        "an SSM parameter / secret name such as /airflow/admin-password: up to 500 of"
        " A-Z a-z 0-9 _ . - in /-separated parts, not starting with aws or ssm",
        "name of the stored admin password",
        reaches=(INSTANCE, RECORD),
    )
    keep_build_sources: bool = setting(
        False,
        _as_bool,
        _always,
        "true or false",
        "keep the build's extra CA, os_mirror and index_url in the image (default: removed at cleanup)",
        reaches=(INSTANCE,),
    )
    log_retention_days: int = setting(
        30,
        _as_int,
        _between(1, 3650),
        "a number of days from 1 to 3650",
        "task and dag-processor logs older than this are pruned (daily timer)",
        reaches=(INSTANCE,),
    )
    db_retention_days: int = setting(
        90,
        _as_int,
        _between(1, 3650),
        "a number of days from 1 to 3650",
        "`airflow db clean` removes metadata (runs, task instances, logs) older than this (daily timer)",
        reaches=(INSTANCE,),
    )
    backup_retention_days: int = setting(
        7,
        _as_int,
        _between(1, 3650),
        "a number of days from 1 to 3650",
        "daily database dumps in /var/backups/airflow older than this are pruned (the newest is kept)",
        reaches=(INSTANCE,),
    )
    backup_s3_uri: str = setting(
        "",
        _as_str,
        _matches(S3_URI_PATTERN),
        "s3://BUCKET[/PREFIX] (a valid bucket name), or empty for local dumps only",
        "where the daily dump is also put, with the instance role's credentials",
        reaches=(INSTANCE,),
    )
    uv_version: str = setting(
        "0.13.9",
        _as_str,
        _matches(VERSION_RE.pattern),
        "a uv release X.Y.Z",
        "uv, which installs Airflow on the build instance (its wheel is pinned by uv_wheel_sha256)",
        reaches=(INSTANCE,),
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
        reaches=(INSTANCE,),
        by_arch=True,
    )
    mysql_signing_key_fingerprint: str = setting(
        "BCA43417C3B485DD128EC6D4B7B3B788A8D3785C",
        _as_str,
        _matches(FINGERPRINT_RE.pattern),
        "40 upper-case hex digits",
        "OpenPGP fingerprint that Oracle's MySQL repository key (and so its release package) must match",
        reaches=(INSTANCE,),
    )
    role: str = setting(
        "standalone",
        _as_str,
        check_role,
        "standalone, controller or worker (controller and worker: --cloud local only; on AWS a cluster"
        " is launched whole with --workers N)",
        "launch: the instance's role, given to it as user data (README 'Scaling out')",
    )
    cluster: str = setting(
        "",
        _as_str,
        check_cluster,
        "1-40 lower-case letters, digits and - (needed by --role controller|worker)",
        "launch/rehearse: the cluster a controller or worker belongs to",
    )
    workers: int = setting(
        0,
        _as_int,
        _between(0, 8),
        "a whole number 0-8",
        "launch/rehearse: a controller and this many workers instead of one standalone instance"
        " (on AWS the workers are an Auto Scaling group); scale: the new number of workers",
    )
    worker_concurrency: int = setting(
        0,
        _as_int,
        _between(0, 256),
        "a whole number 0-256 (0: Airflow's default, 16)",
        "launch/rehearse: tasks one worker runs at once (user data worker_concurrency)",
    )
    dags_s3_uri: str = setting(
        "",
        _as_str,
        check_dags_s3_uri,
        "s3://BUCKET[/PREFIX] holding at least one object; needed for a cluster on AWS",
        "launch --cloud aws: the S3 DAG bundle every node of the cluster reads (user data dags_s3_uri)",
    )
    allow_cidr: tuple[str, ...] = setting(
        (),
        _as_list,
        check_cidrs,
        "comma-separated CIDRs such as 203.0.113.7/32",
        "launch --cloud aws: who may reach SSH and the API port (empty: no inbound rule;"
        " reach the instance through SSM port forwarding)",
    )
    profile: str = setting(
        "",
        _as_str,
        _matches(r"^[A-Za-z0-9_.+-]{1,64}$", empty_ok=True),
        "a profile name of the AWS config files, or empty for boto3's default chain",
        "AWS profile every AWS call of the pipeline uses (credentials stay in the AWS config)",
    )
    cluster_secret_store: str = setting(
        "ssm",
        _as_str,
        _one_of("ssm", "secretsmanager"),
        "ssm or secretsmanager",
        "where a cluster's controller keeps the secrets its workers share (one SecureString"
        " /airflow-ami/<cluster>/shared-secrets, or a secret of that name without the leading /)",
        reaches=(INSTANCE,),
    )
    aws_endpoint_url: str = setting(
        "",
        _as_str,
        _matches(URL_RE.pattern, empty_ok=True),
        "an http(s) URL, or empty for AWS",
        "endpoint of the AWS APIs the instance itself calls (S3 backups, SSM/Secrets Manager);"
        " empty: AWS's regional endpoints; the local cloud sets its moto",
        reaches=(INSTANCE,),
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
    unit_directives: str = setting(
        "os",
        _as_str,
        check_unit_directives,
        "os, or (--cloud local only) an OS profile whose systemd is no newer than this OS's"
        " (amazon-linux-2, amazon-linux-2023, debian)",
        "sandbox directives of the image's units (packer/systemd.yaml): os, those its own systemd"
        " knows; a profile's name rehearses that profile's set on this OS (amazon-linux-2: systemd 219's)",
        reaches=(INSTANCE, RECORD),
        instance_view=_unit_directives_view,
    )
    dry_run: bool = setting(
        False,
        _as_bool,
        _always,
        "true or false",
        "provisioning logs its steps and changes nothing",
        reaches=(INSTANCE,),
    )
    # From the OS profile only.
    os_facts: OsFacts = field(default=None)  # type: ignore[assignment]
    end_of_support: EndOfSupport | None = None

    def reaching(self, target: str) -> dict[str, Any]:
        """{field: value} of the fields declared to reach `target` (lists as lists)."""
        return {f.name: _plain(getattr(self, f.name)) for f in FIELDS if target in f.reaches}

    def instance_view(self) -> dict[str, Any]:
        """What the instance is told (bundle/settings.json): no host paths, no build-only knobs."""
        view: dict[str, Any] = {"_generated": "Generated by airflow-ami render; do not edit."}
        for f in FIELDS:
            if INSTANCE in f.reaches:
                view.update(
                    f.instance_view(self) if f.instance_view else {f.name: _plain(getattr(self, f.name))}
                )
        view["os_facts"] = asdict(self.os_facts)
        return view

    def ami_tags(self) -> dict[str, str]:
        """The user's tags plus airflow-ami:<field> for the fields declared to reach the tags."""
        ours = {tag_key(name): str(v) for name, v in self.reaching(TAGS).items()}
        return {**dict(self.tags), **ours}


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


FIELDS: tuple[Field, ...] = tuple(
    Field(name=f.name, **f.metadata["setting"]) for f in fields(Settings) if "setting" in f.metadata
)
FIELD_BY_NAME = {f.name: f for f in FIELDS}


def _load_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise SettingsError(path.name, "a YAML mapping of setting: value")
    return data


def _pick(name: str, layers: list[Mapping[str, Any]], arch: str | None) -> object:
    """The highest layer's value for name (None/absent means: not set there)."""
    for layer in reversed(layers):
        value = layer.get(name)
        if value is None:
            continue
        if FIELD_BY_NAME[name].by_arch and isinstance(value, Mapping) and arch is not None:
            if set(value) != set(ARCHES):
                raise SettingsError(name, f"a value, or a mapping with exactly the keys {', '.join(ARCHES)}")
            return value[arch]
        return value
    return None


def _profile_layer(os_name: str, arch: str) -> tuple[dict[str, Any], OsFacts, EndOfSupport | None]:
    profile = _load_yaml(PACKER_DIR / "profiles" / f"{os_name}.yaml")
    arch_name = profile.pop("arch_names")[arch]
    facts = profile.pop("os_facts")
    support = profile.pop("end_of_support", None)
    profile["source_ami_name"] = profile["source_ami_name"].replace("{arch}", arch_name)
    try:
        return profile, OsFacts(**facts), EndOfSupport(**support) if support else None
    except TypeError:
        known = ", ".join(f.name for f in fields(OsFacts))
        raise SettingsError(f"{os_name} os_facts", f"a mapping of exactly {known}") from None


def load_settings(config: Mapping[str, Any] | None = None, cli: Mapping[str, Any] | None = None) -> Settings:
    """Resolve and validate the settings from every layer.

    ``config`` is the invoke config's ``ami`` mapping (invoke.yaml / env),
    ``cli`` the task's flags; unset values are None.
    """
    user = [dict(config or {}), dict(cli or {})]
    for layer in user:
        for name in layer:
            if name not in FIELD_BY_NAME:
                raise SettingsError(name, f"one of the known settings ({', '.join(FIELD_BY_NAME)})")
    defaults = {f.name: f.default for f in FIELDS}
    values: dict[str, Any] = {}
    # cloud, os and arch choose the overlay and profile layers, so they resolve first.
    values["cloud"] = _resolve("cloud", [defaults, *user], values, None)
    overlay = _load_yaml(PACKER_DIR / "clouds" / f"{values['cloud']}.yaml")
    for name in ("os", "arch"):
        values[name] = _resolve(name, [defaults, overlay, *user], values, None)
    profile, facts, support = _profile_layer(values["os"], values["arch"])
    layers = [defaults, profile, overlay, *user]
    rest = [f.name for f in FIELDS if f.name not in values]
    values.update({name: _parse(name, _pick(name, layers, values["arch"])) for name in rest})
    if not values["build_name"]:
        suffix = "" if values["cloud"] == "aws" else f"-{values['cloud']}"
        values["build_name"] = f"{values['os']}-{values['arch']}{suffix}"
    if values["workers"] and not values["cluster"]:
        values["cluster"] = DEFAULT_REHEARSAL_CLUSTER
    for name in rest:
        _validate(name, values[name], values)
    return Settings(**values, os_facts=facts, end_of_support=support)


def _parse(name: str, raw: object) -> Any:
    try:
        return FIELD_BY_NAME[name].parse(raw)
    except (ValueError, TypeError):
        raise SettingsError(name, FIELD_BY_NAME[name].allowed, _shown(raw)) from None


def _validate(name: str, value: Any, values: Mapping[str, Any]) -> None:
    try:
        FIELD_BY_NAME[name].check(value, values)
    except (ValueError, TypeError, KeyError):
        raise SettingsError(name, FIELD_BY_NAME[name].allowed, _shown(value)) from None


def _resolve(name: str, layers: list[Mapping[str, Any]], values: Mapping[str, Any], arch: str | None) -> Any:
    value = _parse(name, _pick(name, layers, arch))
    _validate(name, value, values)
    return value


def _shown(value: Any) -> object:
    if isinstance(value, tuple):
        value = ",".join("=".join(v) if isinstance(v, tuple) else v for v in value)
    # A URL's user:token part is a credential: never echo it.
    return USERINFO_RE.sub("//***@", value) if isinstance(value, str) else value
