"""prune-amis, copy-ami, share-ami against moto (never real AWS)."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ec2.models import ec2_backends

from airflow_ami import cli
from airflow_ami.builddir import BuildDir
from airflow_ami.image import amis
from airflow_ami.settings import BakeSettings, SettingsError, load

# Moto plays EC2 in several regions for every test: out of the fast loop (-m "not slow").
pytestmark = pytest.mark.slow

Calls = list[tuple[str, str, dict[str, Any]]]  # the `aws` fixture (conftest.py)
HOME = "us-east-1"
ACCOUNTS = "111122223333,444455556666"
MODIFIES = {
    "DeregisterImage",
    "DeleteSnapshot",
    "CopyImage",
    "ModifyImageAttribute",
    "ModifySnapshotAttribute",
}


def bake(
    region: str,
    day: int,
    *,
    prefix: str = "airflow",
    os_name: str = "amazon-linux-2",
    arch: str = "x86_64",
    key: str = "",
    verified: bool = True,
) -> str:
    """An AMI tagged as the bake tags it (Settings.ami_tags), made on 2026-01-<day>, and
    (`verified`) as a passed `./bake verify` tags it."""
    settings = load(
        BakeSettings, cli={"ami_name_prefix": prefix, "os": os_name, "arch": arch, "tags": "Team=data"}
    )
    client = boto3.client("ec2", region_name=region)
    name = f"{prefix}-3.3.2-{os_name}-{arch}-202601{day:02d}000000"
    ami = str(client.register_image(Name=name, RootDeviceName="/dev/xvda")["ImageId"])
    client.create_tags(Resources=[ami], Tags=[{"Key": k, "Value": v} for k, v in settings.ami_tags().items()])
    if verified:
        amis.mark_verified(client, ami, datetime.datetime(2026, 1, day, 1, tzinfo=datetime.UTC))
    # moto gaps: CreationDate is the registration time to the second (AMIs made in one second tie),
    # register_image ignores BlockDeviceMappings (each AMI gets one snapshot of its own), and that
    # snapshot is never encrypted. So the moto AMI's date and its snapshot's key are set directly.
    moto_ami = ec2_backends[DEFAULT_ACCOUNT_ID][region].amis[ami]
    moto_ami.creation_date = datetime.datetime(2026, 1, day, tzinfo=datetime.UTC)
    if key:
        moto_ami.ebs_snapshot.encrypted, moto_ami.ebs_snapshot.kms_key_id = True, key
    return ami


def images(region: str = HOME) -> set[str]:
    client = boto3.client("ec2", region_name=region)
    return {image["ImageId"] for image in client.describe_images(Owners=["self"])["Images"]}


def snapshot_of(ami: str, region: str = HOME) -> str:
    image = boto3.client("ec2", region_name=region).describe_images(ImageIds=[ami])["Images"][0]
    return str(image["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"])


def snapshots(region: str = HOME) -> set[str]:
    client = boto3.client("ec2", region_name=region)
    return {s["SnapshotId"] for s in client.describe_snapshots(OwnerIds=["self"])["Snapshots"]}


def customer_key(region: str) -> str:
    return str(boto3.client("kms", region_name=region).create_key()["KeyMetadata"]["Arn"])


def record(settings: BakeSettings, **fields: Any) -> Path:
    """build/<name>/ami.json as build-ami writes it (the fields copy and share read)."""
    path = BuildDir.of(settings).ami_record
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"region": settings.region, **fields}))
    return path


def modified(calls: Calls) -> list[str]:
    return [op for _, op, _ in calls if op in MODIFIES]


# ---- prune-amis ----


def test_prune_keeps_the_newest_of_this_prefix_os_and_arch_and_never_touches_others(
    aws: Calls, build_root: Path
) -> None:
    ours = [bake(HOME, day) for day in (1, 2, 3)]
    others = {
        bake(HOME, 1, prefix="airflow-staging"),  # the name glob airflow-*-... matched this one
        bake(HOME, 1, os_name="debian"),
        bake(HOME, 1, arch="arm64"),
    }
    (pruned,) = amis.prune(load(BakeSettings), keep=1, apply=True)
    assert pruned.kept == (ours[2],)
    assert pruned.removed == (ours[1], ours[0])
    assert images() == {ours[2], *others}


def test_a_dry_run_deletes_nothing(aws: Calls, build_root: Path) -> None:
    ours = [bake(HOME, day) for day in (1, 2)]
    (pruned,) = amis.prune(load(BakeSettings), keep=1, apply=False)
    assert pruned.removed == (ours[0],)
    assert modified(aws) == []
    assert images() == set(ours)


def test_snapshots_go_with_their_ami(aws: Calls, build_root: Path) -> None:
    old, new = bake(HOME, 1), bake(HOME, 2)
    old_snapshot, new_snapshot = snapshot_of(old), snapshot_of(new)
    amis.prune(load(BakeSettings), keep=1, apply=True)
    assert old_snapshot not in snapshots()
    assert new_snapshot in snapshots()


def test_amis_still_in_use_are_kept(aws: Calls, build_root: Path) -> None:
    running, stopped, default_version, any_version, newest = (bake(HOME, day) for day in (1, 2, 3, 4, 5))
    gone = bake(HOME, 6)  # only a terminated instance used it
    newest_kept = bake(HOME, 7)
    client = boto3.client("ec2", region_name=HOME)

    def run(ami: str) -> str:
        return str(client.run_instances(ImageId=ami, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"])

    run(running)
    client.stop_instances(InstanceIds=[run(stopped)])
    client.terminate_instances(InstanceIds=[run(gone)])
    template = client.create_launch_template(
        LaunchTemplateName="workers", LaunchTemplateData={"ImageId": default_version}
    )["LaunchTemplate"]["LaunchTemplateId"]
    # Version 2 is neither the default nor the latest: a fleet may still pin it.
    for ami in (any_version, newest):
        client.create_launch_template_version(LaunchTemplateId=template, LaunchTemplateData={"ImageId": ami})
    (pruned,) = amis.prune(load(BakeSettings), keep=1, apply=True)
    assert pruned.kept == (newest_kept,)
    assert set(pruned.in_use) == {running, stopped, default_version, any_version, newest}
    assert pruned.in_use[any_version] == (f"{template} version 2",)
    assert pruned.removed == (gone,)
    assert images() == {running, stopped, default_version, any_version, newest, newest_kept}


def test_amis_that_failed_verification_do_not_count_toward_keep(aws: Calls, build_root: Path) -> None:
    older_failed, old, verified, failed, in_flight = (
        bake(HOME, 1, verified=False),
        bake(HOME, 2),
        bake(HOME, 3),
        bake(HOME, 4, verified=False),
        bake(HOME, 5, verified=False),
    )
    (pruned,) = amis.prune(load(BakeSettings), keep=1, apply=True)
    # The newest verified one is kept; the unverified newer ones may be under verification now.
    assert pruned.kept == (in_flight, failed, verified)
    assert set(pruned.removed) == {old, older_failed}
    assert images() == {verified, failed, in_flight}


def test_fewer_verified_amis_than_keep_prunes_nothing(aws: Calls, build_root: Path) -> None:
    made = {bake(HOME, 1, verified=False), bake(HOME, 2), bake(HOME, 3, verified=False)}
    (pruned,) = amis.prune(load(BakeSettings), keep=2, apply=True)
    assert pruned.removed == () and images() == made


def test_amis_shared_with_other_accounts_are_kept_unless_asked(aws: Calls, build_root: Path) -> None:
    shared, public, old, new = bake(HOME, 1), bake(HOME, 2), bake(HOME, 3), bake(HOME, 4)
    client = boto3.client("ec2", region_name=HOME)
    client.modify_image_attribute(
        ImageId=shared, LaunchPermission={"Add": [{"UserId": "111122223333"}]}, Attribute="launchPermission"
    )
    client.modify_image_attribute(
        ImageId=public, LaunchPermission={"Add": [{"Group": "all"}]}, Attribute="launchPermission"
    )
    (pruned,) = amis.prune(load(BakeSettings), keep=1, apply=True)
    assert pruned.in_use == {shared: ("shared with 111122223333",), public: ("shared with all",)}
    assert pruned.removed == (old,)
    (pruned,) = amis.prune(load(BakeSettings), keep=1, apply=True, shared=True)
    assert set(pruned.removed) == {shared, public} and images() == {new}


@pytest.mark.parametrize("known_by", ["ami_regions", "ami.json", "copy-ami"])
def test_copies_in_other_regions_are_pruned_too(aws: Calls, build_root: Path, known_by: str) -> None:
    settings = load(BakeSettings, cli={"ami_regions": "eu-west-1"} if known_by == "ami_regions" else {})
    old, new = bake("eu-west-1", 1), bake("eu-west-1", 2)
    out = BuildDir.of(settings)
    if known_by == "ami.json":
        record(settings, ami_id="ami-12345678", amis={HOME: "ami-12345678", "eu-west-1": new})
    if known_by == "copy-ami":
        out.write(out.copied_regions_record, {"regions": ["eu-west-1"]})
    pruned = {p.region: p for p in amis.prune(settings, keep=1, apply=True)}
    assert set(pruned) == {HOME, "eu-west-1"}
    assert pruned["eu-west-1"].removed == (old,)
    assert images("eu-west-1") == {new}


# ---- bad flags: one SettingsError naming the flag, before any cloud call ----


KEY_EU = "arn:aws:kms:eu-west-1:123456789012:key/12345678-1234-1234-1234-123456789012"
BAD_FLAGS = [
    ("copy", {"to_regions": ""}, {}, "to_regions"),
    ("copy", {"to_regions": "moon-1"}, {}, "to_regions"),
    ("copy", {"to_regions": "eu-west-1,eu-west-1"}, {}, "to_regions"),
    ("copy", {"to_regions": HOME}, {}, "to_regions"),  # its own region, and no key to re-encrypt with
    ("copy", {"to_regions": "eu-west-1,ap-south-1"}, {"kms_key_id": KEY_EU}, "kms_key_id"),
    ("copy", {"to_regions": "ap-south-1"}, {"kms_key_id": KEY_EU}, "kms_key_id"),
    ("copy", {"to_regions": "eu-west-1", "ami": "i-12345678"}, {}, "ami"),
    ("share", {"accounts": ""}, {}, "accounts"),
    ("share", {"accounts": "1111-2222-3333"}, {}, "accounts"),
    ("share", {"accounts": "111122223333", "ami": "ami-xyz"}, {}, "ami"),
]


@pytest.mark.parametrize("case", BAD_FLAGS, ids=lambda case: f"{case[0]}-{case[3]}")
def test_bad_flags_are_refused_before_any_cloud_call(
    aws: Calls, build_root: Path, case: tuple[str, dict[str, str], dict[str, str], str]
) -> None:
    step, flags, cli, named = case
    settings = load(BakeSettings, cli=cli)
    record(settings, ami_id=bake(HOME, 1))
    before = len(aws)
    with pytest.raises(SettingsError) as err:
        getattr(amis, step)(settings, **flags)
    assert err.value.field == named
    assert aws[before:] == []


# ---- copy-ami ----


def test_copy_tags_waits_and_records_every_copy(aws: Calls, build_root: Path) -> None:
    settings = load(BakeSettings)
    ami = bake(HOME, 1)
    path = record(settings, ami_id=ami, amis={HOME: ami})
    copies = amis.copy(settings, "eu-west-1,ap-south-1")
    assert set(copies) == {"eu-west-1", "ap-south-1"}
    source_tags = {
        t["Key"]: t["Value"] for t in boto3.client("ec2", region_name=HOME).describe_tags()["Tags"]
    }
    for region, copy_id in copies.items():
        client = boto3.client("ec2", region_name=region)
        image = client.describe_images(ImageIds=[copy_id])["Images"][0]
        assert image["State"] == "available" and image["Name"].endswith("-20260101000000")
        for resource in (copy_id, snapshot_of(copy_id, region)):
            tags = client.describe_tags(Filters=[{"Name": "resource-id", "Values": [resource]}])["Tags"]
            assert {t["Key"]: t["Value"] for t in tags} == source_tags
    assert {"Encrypted", "KmsKeyId"}.isdisjoint(next(p for _, op, p in aws if op == "CopyImage"))
    assert json.loads(path.read_text())["amis"] == {HOME: ami, **copies}
    copied = BuildDir.of(settings).copied_regions_record
    assert json.loads(copied.read_text()) == {"regions": ["ap-south-1", "eu-west-1"]}


def test_an_encrypted_ami_is_copied_encrypted(aws: Calls, build_root: Path) -> None:
    settings = load(BakeSettings)
    record(settings, ami_id=bake(HOME, 1, key=customer_key(HOME)))
    amis.copy(settings, "eu-west-1")
    (copy_params,) = [p for _, op, p in aws if op == "CopyImage"]
    # moto gap: CopyImage ignores Encrypted and KmsKeyId, so the request is what is checked.
    assert copy_params["Encrypted"] is True and "KmsKeyId" not in copy_params


def test_a_key_reencrypts_the_copy_even_in_the_amis_own_region(aws: Calls, build_root: Path) -> None:
    key = customer_key(HOME)
    settings = load(BakeSettings, cli={"kms_key_id": key})
    ami = bake(HOME, 1)
    path = record(settings, ami_id=ami, amis={HOME: ami})
    copies = amis.copy(settings, HOME)
    (copy_params,) = [p for _, op, p in aws if op == "CopyImage"]
    assert copy_params["Encrypted"] is True and copy_params["KmsKeyId"] == key
    # AMI names are unique in a region: the copy is named for its own time.
    assert (
        copy_params["Name"]
        != boto3.client("ec2", region_name=HOME).describe_images(ImageIds=[ami])["Images"][0]["Name"]
    )
    written = json.loads(path.read_text())
    assert written["ami_id"] == ami and written["amis"] == {HOME: copies[HOME]}


def test_copy_of_an_ami_given_by_id_records_its_region_only(aws: Calls, build_root: Path) -> None:
    settings = load(BakeSettings)
    copies = amis.copy(settings, "eu-west-1", ami=bake(HOME, 1))
    out = BuildDir.of(settings)
    assert not out.ami_record.exists()
    assert json.loads(out.copied_regions_record.read_text()) == {"regions": ["eu-west-1"]}
    assert set(copies) == {"eu-west-1"}


# ---- share-ami ----


def launch_permissions(region: str, ami: str) -> set[str]:
    client = boto3.client("ec2", region_name=region)
    attribute = client.describe_image_attribute(ImageId=ami, Attribute="launchPermission")
    return {p["UserId"] for p in attribute["LaunchPermissions"]}


def volume_permissions(region: str, snapshot: str) -> set[str]:
    client = boto3.client("ec2", region_name=region)
    attribute = client.describe_snapshot_attribute(SnapshotId=snapshot, Attribute="createVolumePermission")
    return {p["UserId"] for p in attribute["CreateVolumePermissions"]}


def test_share_lets_the_accounts_launch_every_copy_and_use_its_snapshots(
    aws: Calls, build_root: Path
) -> None:
    settings = load(BakeSettings)
    every = {HOME: bake(HOME, 1), "eu-west-1": bake("eu-west-1", 1)}
    record(settings, ami_id=every[HOME], amis=every)
    shared = amis.share(settings, ACCOUNTS)
    assert shared.amis == every and shared.customer_keys == ()
    for region, ami in every.items():
        assert launch_permissions(region, ami) == set(ACCOUNTS.split(","))
        assert volume_permissions(region, snapshot_of(ami, region)) == set(ACCOUNTS.split(","))


def test_share_names_the_customer_managed_keys_the_accounts_need(aws: Calls, build_root: Path) -> None:
    settings = load(BakeSettings)
    key = customer_key(HOME)
    ami = bake(HOME, 1, key=key)
    shared = amis.share(settings, ACCOUNTS, ami=ami)
    assert shared.customer_keys == (key,)
    assert launch_permissions(HOME, ami) == set(ACCOUNTS.split(","))


def test_share_refuses_an_ami_encrypted_with_the_aws_managed_key_and_changes_nothing(
    aws: Calls, build_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load(BakeSettings)
    client = boto3.client("ec2", region_name="eu-west-1")
    # Encrypting without a key uses alias/aws/ebs, made on first use.
    ebs_key = client.create_volume(AvailabilityZone="eu-west-1a", Size=8, Encrypted=True)["KmsKeyId"]
    every = {HOME: bake(HOME, 1), "eu-west-1": bake("eu-west-1", 1, key=ebs_key)}
    record(settings, ami_id=every[HOME], amis=every)
    # moto gap: its alias/aws/ebs key says KeyManager CUSTOMER; AWS says AWS. Only that answer is faked.
    real = amis._key_manager
    monkeypatch.setattr(
        amis, "_key_manager", lambda s, region, key: "AWS" if key == ebs_key else real(s, region, key)
    )
    with pytest.raises(amis.AmiError, match=r"in eu-west-1 .* copy-ami --to-regions REGION --kms-key-id"):
        amis.share(settings, ACCOUNTS)
    assert modified(aws) == []
    assert launch_permissions(HOME, every[HOME]) == set()


# ---- what the tasks print ----


def test_prune_amis_says_per_region_what_it_would_deregister_and_what_is_in_use(
    aws: Calls, build_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    used, old, new = bake(HOME, 1), bake(HOME, 2), bake(HOME, 3)
    client = boto3.client("ec2", region_name=HOME)
    instance = client.run_instances(ImageId=used, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    cli.prune_amis(load(BakeSettings), keep=1, yes=False, include_shared=False)
    assert capsys.readouterr().out.splitlines() == [
        f"prune-amis: {HOME}: would deregister (dry run; --yes to act): {old}",
        f"prune-amis: {HOME}: kept {used}, in use by {instance}",
        f"prune-amis: {HOME}: kept the newest 1 verified and any newer: {new}",
    ]


def test_share_ami_reminds_that_the_key_policy_must_let_the_accounts_in(
    aws: Calls, build_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = customer_key(HOME)
    cli.share_ami(load(BakeSettings), ACCOUNTS, bake(HOME, 1, key=key))
    reminder = capsys.readouterr().out.splitlines()[-1]
    assert reminder.startswith(
        f"share-ami: {key} encrypts its snapshots: its key policy must let 111122223333"
    )
    assert "kms:Decrypt" in reminder and "kms:CreateGrant" in reminder and "kms:DescribeKey" in reminder
