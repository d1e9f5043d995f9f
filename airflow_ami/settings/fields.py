"""The vocabulary of the settings declarations: fields, parsers, checks, where a value reaches.

A settings field is declared once, with `setting(...)`, in one of the
declarations (target.py, bake.py, launch.py): its default, how a raw value is
parsed and checked, its help text, and where it reaches. This module holds
what those declarations are written with.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from airflow_ami.seam import contract, layout

REPO_ROOT = Path(__file__).resolve().parents[2]
# The settings layers: one file per OS profile and one per cloud (layers.py).
SETTINGS_DIR = Path(__file__).resolve().parent
PROFILES_DIR = SETTINGS_DIR / "profiles"
CLOUDS_DIR = SETTINGS_DIR / "clouds"

# Airflow minor -> the Python minors it supports (upstream's support matrix).
AIRFLOW_PYTHONS: dict[tuple[int, int], tuple[str, ...]] = {
    (3, 0): ("3.9", "3.10", "3.11", "3.12"),
    (3, 1): ("3.10", "3.11", "3.12", "3.13"),
    # Airflow 3.2's core takes 3.10-3.14, the providers its constraints pin need 3.11.
    (3, 2): ("3.11", "3.12", "3.13", "3.14"),
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


def os_profiles() -> tuple[str, ...]:
    """The OS profiles: one YAML file each in profiles/."""
    return tuple(sorted(p.stem for p in PROFILES_DIR.glob("*.yaml")))


def _clouds() -> tuple[str, ...]:
    return tuple(sorted(p.stem for p in CLOUDS_DIR.glob("*.yaml")))


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
    ours = [f for f in all_fields().values() if f.on_the_image]
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
    _check(value == "auto" or (value.isdigit() and 1 <= int(value) <= contract.MAX_PARALLELISM))


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


def check_build_ssh_cidrs(value: tuple[str, ...], s: Mapping[str, Any]) -> None:
    # A build host reaching a private address has no public one to stand for it.
    check_cidrs(value, s)
    _check(bool(value) or s["ssh_interface"] != "private_ip")


def check_iam_instance_profile(value: str, s: Mapping[str, Any]) -> None:
    # A cluster's nodes share their secrets through SSM/Secrets Manager and read the
    # DAG bundle from S3, with their instance role.
    aws_cluster = s.get("cloud") == "aws" and s.get("workers", 0) > 0
    needed = s["ssh_interface"] == "session_manager" or aws_cluster
    _check(bool(re.match(r"^[\w+=,.@-]{1,128}$", value)) or (value == "" and not needed))


def check_worker_iam_instance_profile(value: str, s: Mapping[str, Any]) -> None:
    # Workers may not write the store or the DAG bucket, which the controller's role does.
    aws_cluster = s.get("cloud") == "aws" and s.get("workers", 0) > 0
    if value or aws_cluster:
        _check(bool(re.match(r"^[\w+=,.@-]{1,128}$", value)) and value != s.get("iam_instance_profile"))


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


def check_dags_s3_uri(value: str, s: Mapping[str, Any]) -> None:
    # On AWS a cluster's nodes read their DAGs from this bundle; the local cloud makes its own.
    _check(value == "" or bool(re.match(contract.S3_URI_PATTERN, value)))
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


# Where a field's value goes besides the build itself. What reaches the instance's
# settings.json is not marked here: the contract's SETTINGS names it (bake.py).
TAGS = "tags"  # a tag airflow-ami:<field-name> on the AMI, its snapshots and the build instance
MANIFEST = "manifest"  # custom_data of Packer's manifest post-processor
RECORD = "record"  # build/<build-name>/ami.json
# What the image decided, which every launch step reads back from the AMI's record or
# tags and never from its own flags (airflow_ami/image/record.py): TAGS and RECORD too.
IMAGE = "image"
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

    @property
    def on_the_image(self) -> bool:
        """Written on the AMI as a tag (TAGS, or IMAGE which implies it)."""
        return bool({TAGS, IMAGE} & self.reaches)


def setting(
    default: Any,
    parse: Callable[[object], Any],
    check: Callable[[Any, Mapping[str, Any]], None],
    allowed: str,
    help: str,
    *,
    reaches: tuple[str, ...] = (),
    by_arch: bool = False,
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
    }
    return field(metadata={"setting": spec})


# Every declaration (target.py, bake.py, launch.py), in the order they were declared.
DECLARATIONS: list[type] = []


def declaration(cls: type) -> type:
    """Register a frozen dataclass of `setting(...)` fields as a settings declaration."""
    DECLARATIONS.append(cls)
    return cls


def fields_of(cls: type) -> tuple[Field, ...]:
    """The settings fields of a declaration (its bases' first)."""
    return tuple(Field(name=f.name, **f.metadata["setting"]) for f in fields(cls) if "setting" in f.metadata)


def all_fields() -> dict[str, Field]:
    """name -> Field over every declaration (a name two declarations share: the first's)."""
    found: dict[str, Field] = {}
    for cls in DECLARATIONS:
        for f in fields_of(cls):
            found.setdefault(f.name, f)
    return found


def api_url(api_tls: str, api_port: int, address: str) -> str:
    """The API's base URL at `address` (an instance's own, or its address seen from outside)."""
    scheme = "https" if api_tls == "self-signed" else "http"
    return f"{scheme}://{f'[{address}]' if ':' in address else address}:{api_port}"


def plain(value: Any) -> Any:
    """A field's value as JSON and YAML write it (tuples as lists)."""
    if isinstance(value, tuple):
        return [plain(v) for v in value]
    return value


def shown(value: Any) -> object:
    """A value as an error message may show it: lists joined, a URL's credential masked."""
    if isinstance(value, tuple):
        value = ",".join("=".join(v) if isinstance(v, tuple) else v for v in value)
    return USERINFO_RE.sub("//***@", value) if isinstance(value, str) else value


# ---- EC2 notions a bake (its build instance) and a launch (its instances) both decide ----
# One declaration of the value each takes; the declarations say whose it is in their help.


def instance_type_setting(help: str) -> Any:
    return setting(
        None,
        _as_str,
        check_instance_type,
        "an EC2 instance type of the chosen arch, such as t3.large (x86_64) or t4g.large (arm64)",
        help,
        by_arch=True,
    )


def subnet_id_setting(help: str) -> Any:
    return setting(
        "",
        _as_str,
        _matches(r"^subnet-[0-9a-f]{8,17}$", empty_ok=True),
        "subnet- followed by 8-17 hex digits, or empty",
        help,
    )


def iam_instance_profile_setting(help: str) -> Any:
    return setting(
        "",
        _as_str,
        check_iam_instance_profile,
        "an instance profile name (required with ssh_interface=session_manager, and for a cluster on AWS)",
        help,
    )


def ssh_interface_setting(help: str) -> Any:
    return setting(
        "public_ip",
        _as_str,
        _one_of("public_ip", "private_ip", "session_manager"),
        "public_ip, private_ip or session_manager",
        help,
    )


def ssh_keypair_name_setting(help: str) -> Any:
    return setting(
        "", _as_str, check_keypair, "an EC2 key pair name, set together with ssh_private_key_file", help
    )


def ssh_private_key_file_setting() -> Any:
    return setting(
        "",
        _as_str,
        check_private_key_file,
        "the path of an existing private key file, or empty",
        "private key of ssh_keypair_name",
    )


def volume_size_setting(help: str) -> Any:
    return setting(
        20,
        _as_int,
        _between(12, 16384),
        "a size in GiB from 12 to 16384 (the base image's 8 GiB, ~1.5 GiB of MySQL and Airflow,"
        " and room for logs and the database)",
        help,
    )


def tags_setting(help: str) -> Any:
    return setting(
        {},
        _as_tags,
        check_tags,
        f"KEY=VALUE pairs separated by commas, at most {MAX_TAGS} with the pipeline's own airflow-ami:*"
        " tags and Name; keys up to 128 characters of"
        " letters, digits, spaces and _ . : / = + - @, not starting with aws: or airflow-ami:;"
        " values up to 256 characters, no control characters",
        help,
    )
