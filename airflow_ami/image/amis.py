"""The baked AMIs after the bake: prune the old ones, copy them to regions, share them.

prune-amis picks AMIs by the exact tags the bake writes (airflow-ami:ami-name-prefix,
:os, :arch), never by a name glob: `airflow-*` also matches `airflow-staging-*`.
Every task here reads its flags first and refuses bad ones (SettingsError) before
any cloud call.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airflow_ami.builddir import BuildDir, MissingRecord
from airflow_ami.clouds import ec2
from airflow_ami.settings import BakeSettings, SettingsError, all_fields, tag_key
from airflow_ami.settings.fields import TAG_PREFIX, check_accounts, check_ami_regions

# The tags that say which AMIs are the same kind as this build's: only those take turns in --keep.
IDENTITY = ("ami_name_prefix", "os", "arch")
# What a full `./bake verify` that passed writes on the AMI it verified (UTC time): only
# verified AMIs take turns in --keep.
VERIFIED_TAG = TAG_PREFIX + "verified"
# Every state of an instance but terminated keeps its AMI needed (a stopped one starts again).
LIVE_STATES = ("pending", "running", "shutting-down", "stopping", "stopped")
AMI_ID_RE = re.compile(r"^ami-[0-9a-f]{8,17}$")
# The UTC timestamp that ends the names the bake gives (<prefix>-<airflow>-<os>-<arch>-<timestamp>).
NAME_TIME_RE = re.compile(r"-\d{14}$")
# A cross-region copy of a 20 GiB AMI takes minutes, sometimes most of an hour.
COPY_WAIT = {"Delay": 15, "MaxAttempts": 240}
# What target accounts need on a customer-managed key to launch (and copy) an AMI it encrypts.
KEY_ACTIONS = (
    "kms:DescribeKey, kms:Decrypt, kms:ReEncrypt*, kms:GenerateDataKeyWithoutPlaintext, kms:CreateGrant"
)


class AmiError(RuntimeError):
    """A step AWS would refuse or that would do harm; says what to do instead."""


# ---- flags: checked like settings, before any cloud call ----


def _flag(
    name: str,
    raw: str,
    parse: Callable[[object], Any],
    check: Callable[[Any, Mapping[str, Any]], None],
    *,
    allowed: str,
    context: Mapping[str, Any],
) -> Any:
    """A task flag parsed and checked with the settings' own parsers and checks."""
    try:
        value = parse(raw)
        check(value, context)
    except ValueError:
        raise SettingsError(name, allowed, raw) from None
    if not value:
        raise SettingsError(name, allowed)
    return value


def _accounts(raw: str) -> tuple[str, ...]:
    parse = all_fields()["ami_users"].parse
    allowed = "comma-separated 12-digit AWS account ids"
    return tuple(_flag("accounts", raw, parse, check_accounts, allowed=allowed, context={}))


def _to_regions(raw: str, own_region: str, kms_key_id: str) -> tuple[str, ...]:
    # A copy in the AMI's own region can only be meant to re-encrypt it, so there it needs a key.
    context = {"region": "" if kms_key_id else own_region}
    allowed = (
        "comma-separated AWS regions such as eu-west-1,ap-south-1, each once;"
        f" {own_region} (the AMI's own) only with --kms-key-id, to re-encrypt it"
    )
    parse = all_fields()["ami_regions"].parse
    regions: tuple[str, ...] = _flag(
        "to_regions", raw, parse, check_ami_regions, allowed=allowed, context=context
    )
    # A key ARN names one region, and CopyImage takes only a key of the region it copies to.
    if kms_key_id and {kms_key_id.split(":")[3]} != set(regions):
        raise SettingsError(
            "kms_key_id",
            f"a KMS key ARN of the one region copied to ({','.join(regions)}): a key encrypts in its own"
            " region only, so copy to one region per key (or pass --kms-key-id '' for the default EBS key)",
            kms_key_id,
        )
    return regions


@dataclass(frozen=True)
class Source:
    """The AMI a copy or share starts from: --ami in --region, or the last bake's (ami.json)."""

    out: BuildDir
    region: str
    ami_id: str
    record: dict[str, Any] | None

    @property
    def amis(self) -> dict[str, str]:
        """Region -> AMI id of every copy known: the bake's and copy-ami's (ami.json `amis`)."""
        if self.record is None:
            return {self.region: self.ami_id}
        return dict(self.record.get("amis") or {self.region: self.ami_id})


def source(settings: BakeSettings, ami: str) -> Source:
    out = BuildDir.of(settings)
    if ami:
        if not AMI_ID_RE.match(ami):
            raise SettingsError("ami", "an AMI id such as ami-0123456789abcdef0 (in --region)", ami)
        return Source(out, settings.region, ami, None)
    record = out.read(out.ami_record, "run `./bake build-ami` first or pass --ami")
    return Source(out, record["region"], record["ami_id"], record)


def _optional(out: BuildDir, path: Path) -> dict[str, Any]:
    """A record that may not be written yet: empty then."""
    try:
        return out.read(path, "")
    except MissingRecord:
        return {}


# ---- AWS reads ----


def _pages(client: Any, operation: str, key: str, **params: Any) -> Iterator[dict[str, Any]]:
    for page in client.get_paginator(operation).paginate(**params):
        yield from page[key]


def _tags(described: Mapping[str, Any]) -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in described.get("Tags", [])}


def _snapshot_ids(image: Mapping[str, Any]) -> list[str]:
    return [
        m["Ebs"]["SnapshotId"]
        for m in image.get("BlockDeviceMappings", [])
        if m.get("Ebs", {}).get("SnapshotId")
    ]


def _image(client: Any, ami_id: str) -> dict[str, Any]:
    images = client.describe_images(ImageIds=[ami_id])["Images"]
    if not images:
        raise AmiError(
            f"{ami_id} is not in {client.meta.region_name} (deregistered?): pass --ami of one that is"
        )
    return dict(images[0])


def _snapshots(client: Any, image: Mapping[str, Any]) -> list[dict[str, Any]]:
    ids = _snapshot_ids(image)
    return client.describe_snapshots(SnapshotIds=ids)["Snapshots"] if ids else []


def _key_manager(settings: BakeSettings, region: str, key_id: str) -> str:
    """AWS for an AWS-managed key (alias/aws/ebs), CUSTOMER for one of the account's own."""
    kms = ec2.client(settings, region, service="kms")
    return str(kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyManager"])


# ---- prune ----


@dataclass(frozen=True)
class Pruned:
    """One region's AMIs of this kind past the newest --keep."""

    region: str
    kept: tuple[str, ...]  # the newest --keep verified ones, and anything newer (unverified yet)
    in_use: dict[str, tuple[str, ...]]  # older, but used: AMI -> instances, template versions, accounts
    removed: tuple[str, ...]  # deregistered with their snapshots (a dry run: would be)


def prune_regions(settings: BakeSettings) -> list[str]:
    """Where this build's AMIs may be: the region, ami_regions, the bake's record, copy-ami's record."""
    out = BuildDir.of(settings)
    baked = _optional(out, out.ami_record).get("amis", {})
    copied = _optional(out, out.copied_regions_record).get("regions", [])
    return sorted({settings.region, *settings.ami_regions, *baked, *copied})


def prune(settings: BakeSettings, keep: int, *, apply: bool, shared: bool = False) -> list[Pruned]:
    """Per region, the AMIs of this prefix, OS and arch older than the newest `keep` verified ones,
    unless in use (or, without `shared`, shared with other accounts); `apply` deregisters them."""
    if keep < 0:
        raise SettingsError("keep", "a whole number >= 0", keep)
    ours = settings.ami_tags()
    identity = {tag_key(name): ours[tag_key(name)] for name in IDENTITY}
    return [
        _prune_region(settings, region, identity, keep, apply=apply, shared=shared)
        for region in prune_regions(settings)
    ]


def _prune_region(
    settings: BakeSettings, region: str, identity: dict[str, str], keep: int, *, apply: bool, shared: bool
) -> Pruned:
    client = ec2.client(settings, region)
    filters = [{"Name": f"tag:{key}", "Values": [value]} for key, value in identity.items()]
    images = [
        image
        for image in _pages(client, "describe_images", "Images", Owners=["self"], Filters=filters)
        # EC2 filter values are patterns (* and ?): the exact match is made here.
        if identity.items() <= _tags(image).items()
    ]
    images.sort(key=lambda image: image["CreationDate"], reverse=True)
    # An AMI that failed verification does not count; one newer than the kept window may be
    # under verification right now, so it stays until --keep verified ones are newer.
    verified = [i for i, image in enumerate(images) if VERIFIED_TAG in _tags(image)]
    if keep == 0:
        window = 0
    elif len(verified) < keep:
        window = len(images)
    else:
        window = verified[keep - 1] + 1
    older = {image["ImageId"]: image for image in images[window:]}
    users = _users(client, set(older))
    if not shared:
        for ami_id, accounts in _shared_with(client, set(older)).items():
            users.setdefault(ami_id, []).extend(accounts)
    removed = [ami_id for ami_id in older if ami_id not in users]
    if apply:
        for ami_id in removed:
            # The snapshots outlive a deregistered AMI (and cost) unless deleted; not before it is gone.
            client.deregister_image(ImageId=ami_id)
            for snapshot in _snapshot_ids(older[ami_id]):
                client.delete_snapshot(SnapshotId=snapshot)
    return Pruned(
        region=region,
        kept=tuple(image["ImageId"] for image in images[:window]),
        in_use={ami_id: tuple(users[ami_id]) for ami_id in older if ami_id in users},
        removed=tuple(removed),
    )


def _users(client: Any, ami_ids: set[str]) -> dict[str, list[str]]:
    """AMI -> what still launches from it: live instances, and any launch template version naming it."""
    users: dict[str, list[str]] = {}
    if not ami_ids:
        return users
    live = [{"Name": "instance-state-name", "Values": list(LIVE_STATES)}]
    for reservation in _pages(client, "describe_instances", "Reservations", Filters=live):
        for instance in reservation["Instances"]:
            if instance["ImageId"] in ami_ids:
                users.setdefault(instance["ImageId"], []).append(instance["InstanceId"])
    # Not only $Default and $Latest: an Auto Scaling group or a fleet may pin any version.
    for template in _pages(client, "describe_launch_templates", "LaunchTemplates"):
        template_id = template["LaunchTemplateId"]
        versions = _pages(
            client,
            "describe_launch_template_versions",
            "LaunchTemplateVersions",
            LaunchTemplateId=template_id,
        )
        for version in versions:
            image = version["LaunchTemplateData"].get("ImageId")
            if image in ami_ids:
                users.setdefault(image, []).append(f"{template_id} version {version['VersionNumber']}")
    return users


def _shared_with(client: Any, ami_ids: set[str]) -> dict[str, list[str]]:
    """AMI -> who else may launch it (accounts, organizations, everyone): deregistering it
    would break their launches."""
    shared: dict[str, list[str]] = {}
    for ami_id in sorted(ami_ids):
        permissions = client.describe_image_attribute(ImageId=ami_id, Attribute="launchPermission")
        for grant in permissions.get("LaunchPermissions", []):
            who = grant.get("UserId") or grant.get("OrganizationArn") or grant.get("OrganizationalUnitArn")
            shared.setdefault(ami_id, []).append(f"shared with {who or grant.get('Group', 'all')}")
    return shared


def mark_verified(client: Any, ami_id: str, when: datetime.datetime) -> None:
    """Tag the AMI a full verify passed on, so it counts toward prune-amis' --keep."""
    client.create_tags(
        Resources=[ami_id], Tags=[{"Key": VERIFIED_TAG, "Value": when.isoformat(timespec="seconds")}]
    )


# ---- copy ----


def copy(settings: BakeSettings, to_regions: str, ami: str = "") -> dict[str, str]:
    """Copy the AMI (with its tags) to regions, wait until available, record them; region -> copy id."""
    origin = source(settings, ami)
    regions = _to_regions(to_regions, origin.region, settings.kms_key_id)
    client = ec2.client(settings, origin.region)
    image = _image(client, origin.ami_id)
    # CopyImage keeps an encrypted AMI's snapshots encrypted only when asked to.
    encrypted = bool(settings.kms_key_id) or any(s["Encrypted"] for s in _snapshots(client, image))
    name = image["Name"]
    # CopyImage copies no tags; the copies and their snapshots get the source's (aws: ones are AWS's own).
    tags = [{"Key": k, "Value": v} for k, v in sorted(_tags(image).items()) if not k.startswith("aws:")]
    copies: dict[str, str] = {}
    for region in regions:
        params: dict[str, Any] = {
            "SourceImageId": origin.ami_id,
            "SourceRegion": origin.region,
            "Name": _copy_name(name) if region == origin.region else name,
            **({"Description": image["Description"]} if image.get("Description") else {}),
            **({"Encrypted": True} if encrypted else {}),
            **({"KmsKeyId": settings.kms_key_id} if settings.kms_key_id else {}),
        }
        copy_client = ec2.client(settings, region)
        copies[region] = copy_client.copy_image(**params)["ImageId"]
        # Tagged and recorded before the wait: an interrupted copy still completes in AWS, and
        # prune-amis finds it by these tags in the recorded regions.
        if tags:
            copy_client.create_tags(Resources=[copies[region]], Tags=tags)
    known = _optional(origin.out, origin.out.copied_regions_record).get("regions", [])
    origin.out.write(origin.out.copied_regions_record, {"regions": sorted({*known, *copies})})
    for region, copy_id in copies.items():
        copy_client = ec2.client(settings, region)
        copy_client.get_waiter("image_available").wait(ImageIds=[copy_id], WaiterConfig=COPY_WAIT)
        # A copy's snapshots exist only once it is available.
        snapshots = _snapshot_ids(_image(copy_client, copy_id))
        if tags and snapshots:
            copy_client.create_tags(Resources=snapshots, Tags=tags)
    if origin.record is not None:
        _record_copies(origin, copies)
    return copies


def _copy_name(name: str) -> str:
    """A name for a copy in the AMI's own region, where names are unique: the copy's own time."""
    now = datetime.datetime.now(datetime.UTC)
    return f"{NAME_TIME_RE.sub('', name)}-{now:%Y%m%d%H%M%S}"


def _record_copies(origin: Source, copies: Mapping[str, str]) -> None:
    # `amis` is what share-ami shares: a copy re-encrypted in the AMI's own region takes its place there.
    origin.out.write(origin.out.ami_record, {**(origin.record or {}), "amis": {**origin.amis, **copies}})


# ---- share ----


@dataclass(frozen=True)
class Shared:
    accounts: tuple[str, ...]
    amis: dict[str, str]  # region -> AMI id shared
    customer_keys: tuple[str, ...]  # customer-managed keys of its snapshots: the accounts need to use them


def share(settings: BakeSettings, accounts: str, ami: str = "") -> Shared:
    """Let accounts launch every copy of the AMI (and create volumes from its snapshots).

    Refused, with nothing changed, when a snapshot is encrypted with the AWS-managed
    EBS key: AWS cannot share that key, so the accounts could never launch it.
    """
    account_ids = _accounts(accounts)
    amis = source(settings, ami).amis
    snapshots: dict[str, list[dict[str, Any]]] = {}
    for region, ami_id in sorted(amis.items()):
        client = ec2.client(settings, region)
        snapshots[region] = _snapshots(client, _image(client, ami_id))
    keys = {
        (region, s["KmsKeyId"])
        for region, described in snapshots.items()
        for s in described
        if s["Encrypted"]
    }
    managers = {(region, key): _key_manager(settings, region, key) for region, key in sorted(keys)}
    aws_managed = sorted(region for (region, _), manager in managers.items() if manager == "AWS")
    if aws_managed:
        raise AmiError(
            f"the AMI's snapshots in {', '.join(aws_managed)} are encrypted with the AWS-managed EBS key"
            " (alias/aws/ebs), which AWS cannot share: re-encrypt first, per region, with"
            " `./bake copy-ami --to-regions REGION --kms-key-id <customer-managed key ARN in REGION>`,"
            " then share-ami again"
        )
    users = [{"UserId": account} for account in account_ids]
    for region, ami_id in sorted(amis.items()):
        client = ec2.client(settings, region)
        client.modify_image_attribute(ImageId=ami_id, LaunchPermission={"Add": users})
        for snapshot in snapshots[region]:
            client.modify_snapshot_attribute(
                SnapshotId=snapshot["SnapshotId"],
                Attribute="createVolumePermission",
                OperationType="add",
                UserIds=list(account_ids),
            )
    return Shared(accounts=account_ids, amis=amis, customer_keys=tuple(sorted({key for _, key in managers})))
