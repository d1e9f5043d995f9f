"""Settings: three declarations, layer precedence and every validation rule, one bad value at a time."""

from __future__ import annotations

import datetime
import shutil
from pathlib import Path

import pytest

from airflow_ami.seam import contract
from airflow_ami.settings import (
    MANIFEST,
    RECORD,
    BakeSettings,
    LaunchSettings,
    SettingsError,
    Target,
    all_fields,
    fields_of,
    layers,
    load,
)
from airflow_ami.settings.bake import LOCK_FILE, LOCKED_UV
from airflow_ami.settings.fields import PROFILES_DIR


def load_settings(
    config: dict[str, object] | None = None, cli: dict[str, object] | None = None
) -> BakeSettings:
    return load(BakeSettings, config, cli)


def names(cls: type) -> set[str]:
    return {f.name for f in fields_of(cls)}


# What only a launch decides: its rows are loaded as LaunchSettings.
LAUNCH_ONLY = names(LaunchSettings) - names(BakeSettings)


def test_defaults_come_from_the_amazon_linux_2_profile() -> None:
    s = load_settings()
    assert (s.os, s.arch, s.os_facts.package_manager, s.ssh_username) == (
        "amazon-linux-2",
        "x86_64",
        "yum",
        "ec2-user",
    )
    assert s.instance_type == "t3.large"
    assert s.source_ami_owners == ("137112412989",)
    assert s.source_ami_name == "amzn2-ami-kernel-5.10-hvm-2.0.*-x86_64-gp2"
    assert s.build_name == "amazon-linux-2-x86_64"
    assert s.airflow_version == "3.3.2" and s.encrypt_boot is True


@pytest.mark.parametrize(
    ("os_name", "arch", "instance_type", "ami_name", "manager"),
    [
        ("amazon-linux-2", "arm64", "t4g.large", "amzn2-ami-kernel-5.10-hvm-2.0.*-arm64-gp2", "yum"),
        ("amazon-linux-2023", "x86_64", "t3.large", "al2023-ami-2023.*-kernel-6.1-x86_64", "dnf"),
        ("debian", "x86_64", "t3.large", "debian-12-amd64-*", "apt"),
        ("debian", "arm64", "t4g.large", "debian-12-arm64-*", "apt"),
    ],
)
def test_profile_defaults_follow_os_and_arch(
    os_name: str, arch: str, instance_type: str, ami_name: str, manager: str
) -> None:
    s = load_settings(cli={"os": os_name, "arch": arch})
    assert (s.instance_type, s.source_ami_name, s.os_facts.package_manager) == (
        instance_type,
        ami_name,
        manager,
    )


def test_cli_beats_config_beats_profile() -> None:
    config = {"region": "eu-west-1", "instance_type": "m5.large", "volume_size": "30"}
    s = load_settings(config=config, cli={"region": "ap-northeast-2"})
    assert s.region == "ap-northeast-2"  # CLI over config
    assert s.instance_type == "m5.large"  # config over profile
    assert s.volume_size == 30
    assert load_settings(config=config).region == "eu-west-1"


def test_config_can_switch_the_profile_and_cli_can_switch_it_back() -> None:
    assert load_settings(config={"os": "debian"}).ssh_username == "admin"
    assert load_settings(config={"os": "debian"}, cli={"os": "amazon-linux-2023"}).ssh_username == "ec2-user"


def test_unset_cli_values_do_not_override() -> None:
    assert load_settings(config={"region": "eu-west-1"}, cli={"region": None}).region == "eu-west-1"


def test_lists_and_tags_parse_from_strings_and_yaml_values() -> None:
    a = load_settings(cli={"ami_regions": "eu-west-1, us-west-2", "tags": "Team=data,Env=prod"})
    b = load_settings(
        config={"ami_regions": ["eu-west-1", "us-west-2"], "tags": {"Env": "prod", "Team": "data"}}
    )
    assert a.ami_regions == b.ami_regions == ("eu-west-1", "us-west-2")
    assert a.tags == b.tags == (("Env", "prod"), ("Team", "data"))


def test_a_field_that_does_not_exist_is_rejected() -> None:
    with pytest.raises(SettingsError, match="setting regoin"):
        load_settings(config={"regoin": "eu-west-1"})


GOOD_KEY = "arn:aws:kms:eu-west-1:123456789012:key/12345678-1234-1234-1234-123456789012"

# (field, bad value, extra settings that make it the only bad one)
# A cluster launched on AWS: its DAG bundle and the instance profile that reads it and the secrets.
AWS_CLUSTER = {
    "cloud": "aws",
    "workers": "2",
    "dags_s3_uri": "s3://dags/d",
    "iam_instance_profile": "node",
    "worker_iam_instance_profile": "worker-node",
}

BAD_VALUES = [
    ("os", "windows", {}),
    ("cloud", "gcp", {}),
    ("arch", "i386", {}),
    ("region", "mars-1", {}),
    ("region", "us-east", {}),
    ("ami_regions", "eu-west-1,moon-2", {}),
    ("ami_regions", "us-east-1", {}),  # the build region itself
    ("ami_regions", "eu-west-1,eu-west-1", {}),
    ("instance_type", "large", {}),
    ("instance_type", "t4g.large", {}),  # arm64 type on x86_64
    ("instance_type", "t3.large", {"arch": "arm64"}),
    ("vpc_id", "vpc-xyz", {}),
    ("subnet_id", "subnet-12", {}),
    ("ssh_interface", "telnet", {}),
    ("iam_instance_profile", "bad name!", {}),
    ("ssh_cidrs", "10.0.0.1/8", {}),
    ("ssh_cidrs", "10.0.0.0", {}),
    ("ssh_cidrs", "300.0.0.0/8", {}),
    ("ssh_username", "Root User", {}),
    ("ssh_host", "bad host!", {}),
    ("ssh_port", "0", {}),
    ("ssh_port", "ssh", {}),
    ("ssh_keypair_name", "mine", {}),  # without its private key file
    ("ssh_private_key_file", "/nonexistent/key", {}),
    ("kms_key_id", "12345678", {}),
    ("kms_key_id", "arn:aws:kms:eu-west-1:1234:key/x", {}),
    ("kms_key_id", GOOD_KEY, {"encrypt_boot": "false"}),
    ("encrypt_boot", "maybe", {}),
    ("volume_size", "4", {}),
    ("volume_size", "10", {}),  # below the base image plus what the image adds
    ("volume_size", "big", {}),
    ("ami_name_prefix", "ab", {}),
    ("ami_name_prefix", "airflow#1", {}),
    ("ami_name_prefix", "a" * 90, {}),
    ("tags", "aws:owner=me", {}),
    ("tags", "novalue", {}),
    ("tags", "bad{key}=1", {}),
    ("tags", ",".join(f"k{i}=v" for i in range(48)), {}),  # over AWS's 50 with ours
    ("tags", "Team=a\x07b", {}),  # a control character
    ("tags", "Team=a\nb", {}),
    ("tags", "airflow-ami:os=debian", {}),  # the pipeline's own tag
    ("ami_users", "12345", {}),
    ("ami_users", "123456789012", {}),  # encrypted with the default EBS key: AWS cannot share it
    ("source_ami_owners", "someone", {}),
    ("source_ami_name", "x", {}),
    ("airflow_version", "2.10.5", {}),
    ("airflow_version", "3.3", {}),
    ("airflow_version", "9.0.0", {}),
    ("python_version", "3.9", {}),
    ("python_version", "3.10", {}),  # Airflow 3.3's providers need 3.11
    ("python_version", "3.14", {"airflow_version": "3.1.0"}),
    ("mysql_version", "5.7", {}),
    ("max_allowed_packet", "64", {}),
    ("max_allowed_packet", "2G", {}),
    ("max_allowed_packet", "1M", {}),
    ("parallelism", "0", {}),
    ("parallelism", "lots", {}),
    ("parallelism", "5000", {}),
    ("extra_python_packages", "good==1.0,bad pkg", {}),
    ("extra_python_packages", "apache-airflow==3.2.0", {}),
    ("extra_python_packages", "Apache_Airflow_Core<3.3", {}),
    ("extra_python_packages", "apache-airflow-task-sdk==1.0.0", {}),
    ("constraints", "nope.txt", {}),
    ("constraints", "../outside.txt", {}),
    ("index_url", "ftp://mirror.example/simple", {}),
    ("index_url", "https://mirror.example/simple\\", {}),
    ("index_url", "https://mirror.example/simple?x=1", {}),
    ("os_mirror", "not a url", {}),
    ("os_mirror", "http://user:secret@mirror.example/debian", {}),
    ("os_mirror", "http://mirror.example/deb(ian|x)", {}),
    ("os_mirror", "http://mirror.example/debian\\1", {}),
    ("extra_ca_bundle", "/nonexistent/ca.pem", {}),
    ("api_port", "80", {}),
    ("api_port", "3306", {}),
    ("api_port", "8793", {}),
    ("admin_username", "1admin", {}),
    ("api_host", "all", {}),
    ("api_host", "10.0.0.256", {}),
    ("api_tls", "letsencrypt", {}),
    ("admin_password_store", "vault", {}),
    ("admin_password_name", "bad name", {}),
    ("admin_password_name", "/aws/airflow", {}),
    ("admin_password_name", "ssm-admin", {}),
    ("admin_password_name", "a//b", {}),
    ("admin_password_name", "/airflow/", {}),
    ("ec2_endpoint", "localhost:5000", {}),
    ("aws_endpoint_url", "s3.amazonaws.com", {}),
    ("secret_store", "vault", {}),
    ("role", "scheduler", {}),
    ("cluster", "Analytics", {"cloud": "local", "role": "controller", "cluster": "analytics"}),
    ("cluster", "", {"cloud": "local", "role": "worker", "cluster": "analytics"}),
    ("cluster", "Bad Name", {"cloud": "local", "workers": "2"}),
    ("workers", "9", {"cloud": "local", "workers": "2", "cluster": "analytics"}),
    ("min_workers", "3", {"cloud": "local", "workers": "2", "cluster": "analytics"}),
    ("min_workers", "0", {}),
    ("max_workers", "1", {"cloud": "local", "workers": "2", "cluster": "analytics"}),
    ("max_workers", "9", {}),
    ("max_workers", "2", {"min_workers": "3"}),
    ("role", "worker", {"cloud": "aws", "cluster": "analytics"}),
    ("dags_s3_uri", "", {**AWS_CLUSTER}),
    ("iam_instance_profile", "", {**AWS_CLUSTER}),
    ("worker_iam_instance_profile", "", {**AWS_CLUSTER}),
    # The controller's profile writes the store and the DAG bucket: never the workers'.
    ("worker_iam_instance_profile", "node", {**AWS_CLUSTER}),
    ("dags_s3_uri", "s3://UPPER/x", {}),
    ("allow_cidr", "203.0.113.7", {}),
    ("allow_cidr", "10.0.0.1/8", {}),
    ("profile", "no spaces", {}),
    ("worker_concurrency", "-1", {}),
    ("cpu_quota", "5", {"cloud": "local"}),
    ("cpu_quota", "66", {"cloud": "aws"}),
    ("cpu_quota", "two thirds", {"cloud": "local"}),
    ("build_name", "Has Space", {}),
    ("dry_run", "perhaps", {}),
    ("uv_version", "latest", {}),
    ("log_retention_days", "0", {}),
    ("keep_build_sources", "sometimes", {}),
    ("backup_retention_days", "0", {}),
    ("backup_interval_minutes", "1", {}),
    ("deployment", "Prod", {}),
    ("deployment", "other", {"cloud": "local", "workers": "2", "cluster": "analytics"}),
    ("restore", "latest", {}),
    ("restore", "s3://backups/dump.txt", {"deployment": "prod"}),
    ("backup_s3_uri", "https://bucket/x", {}),
    ("backup_s3_uri", "s3://UPPER/x", {}),
    ("task_logs_s3_uri", "/var/log/airflow", {}),
    # S3 takes a quote in a key; the instance's env files cannot carry one.
    ("task_logs_s3_uri", "s3://logs/it's", {}),
    ("dags_s3_uri", "s3://dags/it's", {}),
    ("cloudwatch_metrics", "sometimes", {}),
    ("db_retention_days", "forever", {}),
    ("uv_wheel_sha256", "D7F459FE", {}),
    ("mysql_signing_key_fingerprint", "a8d3785c", {}),
    ("unit_directives", "amazon-linux-2", {}),
    ("unit_directives", "windows", {"cloud": "local"}),
    ("unit_directives", "debian", {"cloud": "local", "os": "amazon-linux-2"}),
]


def test_every_field_has_a_bad_value_case() -> None:
    assert set(all_fields()) == {name for name, _, _ in BAD_VALUES}


@pytest.mark.parametrize(
    ("name", "value", "extra"), BAD_VALUES, ids=[f"{n}={v}"[:40] for n, v, _ in BAD_VALUES]
)
def test_one_bad_value_names_its_field(name: str, value: str, extra: dict[str, str]) -> None:
    declaration = LaunchSettings if {name, *extra} & LAUNCH_ONLY else BakeSettings
    load(declaration, cli=extra)  # the context alone is valid
    with pytest.raises(SettingsError) as err:
        load(declaration, cli={**extra, name: value})
    assert err.value.field == name
    message = str(err.value)
    assert message.startswith(f"setting {name}: must be ")
    assert "\n" not in message


GOOD_VALUES = [
    ("region", "ap-northeast-2"),
    ("region", "us-gov-west-1"),
    ("instance_type", "c7i.2xlarge"),
    ("ssh_cidrs", "203.0.113.0/24,10.0.0.0/8"),
    ("kms_key_id", GOOD_KEY),
    ("kms_key_id", "arn:aws:kms:eu-west-1:123456789012:alias/airflow"),
    ("ami_users", "123456789012,210987654321"),
    ("tags", "Cost Center=42,team:owner=data"),
    ("python_version", "3.12"),
    ("parallelism", "32"),
    ("extra_python_packages", "apache-airflow-providers-http==5.3.0,pandas>=2"),
    ("extra_python_packages", "apache-airflow==3.3.2"),
    ("tags", "Team=🚀,Owner=Zoë"),
    ("os_mirror", "https://deb.example:8443/debian-mirror/"),
    ("index_url", "https://build:S3cr3tT0ken@pypi.example/simple"),
    ("index_url", "https://mirror.example/simple"),
    ("max_allowed_packet", "256M"),
    ("unit_directives", "os"),
]


# What a good value needs beside it to be good.
GOOD_CONTEXT = {"ami_users": {"kms_key_id": GOOD_KEY}}


@pytest.mark.parametrize(("name", "value"), GOOD_VALUES)
def test_good_values_pass(name: str, value: str) -> None:
    load_settings(cli={name: value, **GOOD_CONTEXT.get(name, {})})


def test_a_credential_in_a_url_is_never_echoed() -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(cli={"index_url": "https://build:S3cr3tT0ken@pypi.example/simple?bad=query"})
    assert "S3cr3tT0ken" not in str(err.value) and "//***@pypi.example" in str(err.value)


def test_sharing_an_encrypted_ami_needs_a_customer_managed_key() -> None:
    s = load_settings(cli={"ami_users": "123456789012", "kms_key_id": GOOD_KEY})
    assert s.ami_users == ("123456789012",)
    assert load_settings(cli={"ami_users": "123456789012", "encrypt_boot": "false"}).ami_users


def test_session_manager_needs_an_instance_profile() -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(cli={"ssh_interface": "session_manager"})
    assert err.value.field == "iam_instance_profile"
    load_settings(cli={"ssh_interface": "session_manager", "iam_instance_profile": "packer-ssm"})


def test_arm64_takes_graviton_types() -> None:
    assert load_settings(cli={"arch": "arm64", "instance_type": "m7gd.xlarge"}).instance_type == "m7gd.xlarge"


def test_files_must_exist(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("private")
    s = load_settings(cli={"ssh_keypair_name": "mine", "ssh_private_key_file": str(key)})
    assert s.ssh_private_key_file == str(key)
    ca = tmp_path / "ca.pem"
    ca.write_text("not a certificate")
    with pytest.raises(SettingsError, match="extra_ca_bundle"):
        load_settings(cli={"extra_ca_bundle": str(ca)})
    cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    ca.write_text(cert + "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n")
    with pytest.raises(SettingsError, match="no private key"):
        load_settings(cli={"extra_ca_bundle": str(ca)})
    ca.write_text(cert)
    assert load_settings(cli={"extra_ca_bundle": str(ca)}).extra_ca_bundle == str(ca)


def test_a_per_arch_value_is_taken_for_the_build_arch() -> None:
    config = {"instance_type": {"x86_64": "m5.large", "arm64": "m7g.large"}}
    assert load_settings(config=config).instance_type == "m5.large"
    assert load_settings(config=config, cli={"arch": "arm64"}).instance_type == "m7g.large"
    assert load_settings().uv_wheel_sha256 != load_settings(cli={"arch": "arm64"}).uv_wheel_sha256
    with pytest.raises(SettingsError) as err:
        load_settings(config={"instance_type": {"x86_64": "m5.large"}})
    assert err.value.field == "instance_type"


def test_settings_json_holds_exactly_the_contract_s_keys() -> None:
    s = load_settings(cli={"os": "debian", "tags": "Team=data"})
    view = s.instance_view()
    assert set(view) == {"_generated", *contract.SETTINGS}
    assert set(view["os_facts"]) == set(contract.OS_FACTS)
    assert view["os_facts"]["mysql_unit"] == "mysql.service"
    assert "ec2_endpoint" not in view and "ssh_private_key_file" not in view
    assert s.ami_tags() == {
        "Team": "data",
        "airflow-ami:os": "debian",
        "airflow-ami:arch": "x86_64",
        "airflow-ami:ami-name-prefix": "airflow",
        "airflow-ami:airflow-version": "3.3.2",
        # What the image decided, read back by every launch step (image/record.py).
        "airflow-ami:ssh-username": "admin",
        "airflow-ami:api-port": "8080",
        "airflow-ami:api-tls": "none",
        "airflow-ami:admin-username": "admin",
        "airflow-ami:admin-password-store": "none",
        "airflow-ami:admin-password-name": "/airflow/admin-password",
    }
    assert set(s.reaching(MANIFEST)) == {f.name for f in fields_of(BakeSettings) if MANIFEST in f.reaches}
    assert s.reaching(RECORD)["region"] == "us-east-1" and s.reaching(RECORD)["api_port"] == 8080


def test_bake_and_launch_are_separate_declarations_sharing_only_the_target() -> None:
    shared = names(BakeSettings) & names(LaunchSettings)
    assert names(Target) <= shared
    # The same EC2 notions, each declared for its own instances (the build's, the launch's).
    assert shared - names(Target) == {
        "instance_type",
        "subnet_id",
        "iam_instance_profile",
        "ssh_interface",
        "ssh_keypair_name",
        "ssh_private_key_file",
        "volume_size",
        "kms_key_id",
        "tags",
        # The bake's default, a launch's own choice.
        "backup_s3_uri",
        "backup_interval_minutes",
        "task_logs_s3_uri",
    }
    assert not {"api_port", "api_tls", "admin_username", "airflow_version"} & names(LaunchSettings)
    assert not {"workers", "cluster", "role", "allow_cidr"} & names(BakeSettings)


def test_a_layer_may_hold_any_declaration_s_keys_but_a_task_only_its_own() -> None:
    config = {"workers": "2", "api_port": "9090"}
    assert load_settings(config=config).api_port == 9090
    assert load(LaunchSettings, config=config, cli={"cloud": "local"}).workers == 2
    with pytest.raises(SettingsError) as err:
        load(Target, cli={"workers": "2"})
    assert err.value.field == "workers"


def test_a_profile_must_declare_every_os_fact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    profiles = tmp_path / "profiles"
    shutil.copytree(PROFILES_DIR, profiles)
    profile = profiles / "debian.yaml"
    profile.write_text(profile.read_text().replace("  mysql_socket: /run/mysqld/mysqld.sock\n", ""))
    monkeypatch.setattr(layers, "PROFILES_DIR", profiles)
    with pytest.raises(SettingsError, match="debian os_facts"):
        load_settings(cli={"os": "debian"})


def test_amazon_linux_2_is_built_with_a_warning_after_its_end_of_support() -> None:
    support = load_settings(cli={"os": "amazon-linux-2"}).end_of_support
    assert support is not None
    assert support.warning("amazon-linux-2", datetime.date(2026, 6, 30)) is None
    line = support.warning("amazon-linux-2", datetime.date(2026, 7, 1))
    assert line is not None and "2026-06-30" in line and "--os amazon-linux-2023" in line
    assert "\n" not in line
    assert load_settings(cli={"os": "amazon-linux-2023"}).end_of_support is None


def test_uv_is_pinned_once_and_its_wheels_belong_to_that_release() -> None:
    """The image's uv is requirements.lock's (./bake reads the same line), and each arch's
    wheel sha256 is one of that locked release's hashes."""
    lines = LOCK_FILE.read_text().splitlines()
    start = lines.index(next(line for line in lines if line.startswith(f"uv=={LOCKED_UV} ")))
    hashes = set()
    for line in lines[start + 1 :]:
        if not line.strip().startswith("--hash=sha256:"):
            break
        hashes.add(line.strip().removeprefix("--hash=sha256:").rstrip(" \\"))
    for arch in ("x86_64", "arm64"):
        s = load_settings(cli={"arch": arch})
        assert s.uv_version == LOCKED_UV and s.uv_wheel_sha256 in hashes, arch
    assert "sed -n 's/^uv==" in Path("bake").read_text(), "./bake bootstraps the locked uv"
