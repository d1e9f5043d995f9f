"""Settings: layer precedence and every validation rule, one bad value at a time."""

from __future__ import annotations

import datetime
import shutil
from pathlib import Path

import pytest

import airflow_ami.settings as settings_module
from airflow_ami.settings import FIELDS, INSTANCE, MANIFEST, RECORD, SettingsError, load_settings


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
AWS_CLUSTER = {"cloud": "aws", "workers": "2", "dags_s3_uri": "s3://dags/d", "iam_instance_profile": "node"}

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
    ("cluster_secret_store", "vault", {}),
    ("role", "scheduler", {}),
    ("cluster", "Analytics", {"cloud": "local", "role": "controller", "cluster": "analytics"}),
    ("cluster", "", {"cloud": "local", "role": "worker", "cluster": "analytics"}),
    ("cluster", "Bad Name", {"cloud": "local", "workers": "2"}),
    ("workers", "9", {"cloud": "local", "workers": "2", "cluster": "analytics"}),
    ("role", "worker", {"cloud": "aws", "cluster": "analytics"}),
    ("dags_s3_uri", "", {**AWS_CLUSTER}),
    ("iam_instance_profile", "", {**AWS_CLUSTER}),
    ("dags_s3_uri", "s3://UPPER/x", {}),
    ("allow_cidr", "203.0.113.7", {}),
    ("allow_cidr", "10.0.0.1/8", {}),
    ("profile", "no spaces", {}),
    ("worker_concurrency", "-1", {}),
    ("build_name", "Has Space", {}),
    ("dry_run", "perhaps", {}),
    ("uv_version", "latest", {}),
    ("log_retention_days", "0", {}),
    ("keep_build_sources", "sometimes", {}),
    ("backup_retention_days", "0", {}),
    ("backup_s3_uri", "https://bucket/x", {}),
    ("backup_s3_uri", "s3://UPPER/x", {}),
    ("db_retention_days", "forever", {}),
    ("uv_wheel_sha256", "D7F459FE", {}),
    ("mysql_signing_key_fingerprint", "a8d3785c", {}),
    ("unit_directives", "amazon-linux-2", {}),
    ("unit_directives", "windows", {"cloud": "local"}),
    ("unit_directives", "debian", {"cloud": "local", "os": "amazon-linux-2"}),
]


def test_every_field_has_a_bad_value_case() -> None:
    assert {f.name for f in FIELDS} == {name for name, _, _ in BAD_VALUES}


@pytest.mark.parametrize(
    ("name", "value", "extra"), BAD_VALUES, ids=[f"{n}={v}"[:40] for n, v, _ in BAD_VALUES]
)
def test_one_bad_value_names_its_field(name: str, value: str, extra: dict[str, str]) -> None:
    load_settings(cli=extra)  # the context alone is valid
    with pytest.raises(SettingsError) as err:
        load_settings(cli={**extra, name: value})
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


def test_the_views_derive_from_the_declarations() -> None:
    s = load_settings(cli={"os": "debian", "tags": "Team=data"})
    view = s.instance_view()
    declared = {f.name for f in FIELDS if INSTANCE in f.reaches}
    derived = {
        "constraints": {"constraints_url", "constraints_file"},
        "api_host": {"api_host", "api_url"},
        "unit_directives": {"unit_directives", "unit_directives_systemd"},
    }
    assert set(view) == {"_generated", "os_facts"} | {
        key for name in declared for key in derived.get(name, {name})
    }
    assert view["os_facts"]["mysql_unit"] == "mysql.service"
    assert "ec2_endpoint" not in view and "ssh_private_key_file" not in view
    assert s.ami_tags() == {
        "Team": "data",
        "airflow-ami:os": "debian",
        "airflow-ami:arch": "x86_64",
        "airflow-ami:ami-name-prefix": "airflow",
        "airflow-ami:airflow-version": "3.3.2",
    }
    assert set(s.reaching(MANIFEST)) == {f.name for f in FIELDS if MANIFEST in f.reaches}
    assert s.reaching(RECORD)["region"] == "us-east-1"


def test_a_profile_must_declare_every_os_fact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    packer_dir = tmp_path / "packer"
    shutil.copytree(settings_module.PACKER_DIR, packer_dir)
    profile = packer_dir / "profiles" / "debian.yaml"
    profile.write_text(profile.read_text().replace("  mysql_socket: /run/mysqld/mysqld.sock\n", ""))
    monkeypatch.setattr(settings_module, "PACKER_DIR", packer_dir)
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
