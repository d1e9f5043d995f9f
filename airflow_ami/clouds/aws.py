"""Launch on EC2, and take down exactly what a launch made.

A launch records every resource before the call that makes it
(build/<name>/aws-launch.json): by its name where AWS keys it by name, else with
what finds it (its security group's name, this launch's own id tag), and its id
once AWS returns it. So a launch that fails, or is interrupted even between a
create call's return and the next line, leaves a record naming everything, and
`teardown` removes what it lists and nothing else. Teardown looks nothing up by
anything but this launch's names and its own random launch id: another person's
or CI job's launch in the same region survives it.

What a launch makes, in order: a key pair (unless --ssh-keypair-name names
one), a security group of its own, the instance (a cluster's controller), for a
named deployment an Elastic IP (the deployment's address, which an upgrade
moves to the new instance), and for --workers N a launch template plus an Auto
Scaling group of N workers with its termination lifecycle hook and a target-tracking
policy on the broker's queue depth per worker (clouds/autoscaling.py, shared with the
local cloud). A scale-in lets every leaving worker drain and complete the hook's action.
"""

from __future__ import annotations

import base64
import dataclasses
import ipaddress
import json
import os
import re
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import botocore.exceptions

from airflow_ami.builddir import BuildDir
from airflow_ami.clouds import BuildHost, InstanceRecord, autoscaling, cluster_ports, launch_user_data
from airflow_ami.clouds.ec2 import client, image_tags
from airflow_ami.image.record import Baked
from airflow_ami.seam import contract
from airflow_ami.settings import BakeSettings, LaunchSettings, Target

LAUNCH_TAG = "airflow-ami:launched-from"
LAUNCH_ID_TAG = "airflow-ami:launch-id"
# Seconds between polls while waiting (tests set 0: moto answers at once).
POLL = 5.0
STATUS_TIMEOUT = 900.0
# Teardown deletes in this order: what holds a resource goes before it.
KINDS = (
    "scaling_policy",
    "lifecycle_hook",
    "auto_scaling_group",
    "instance",
    "address",
    "launch_template",
    "security_group",
    "key_pair",
)
# How cloud-init shows an instance's SSH host keys on its console (ssh trusts only those).
HOST_KEYS_RE = re.compile(r"-----BEGIN SSH HOST KEY KEYS-----\s*(.*?)-----END SSH HOST KEY KEYS-----", re.S)
# Errors that mean "already gone": teardown is idempotent.
GONE = {
    "InvalidAllocationID.NotFound",
    "InvalidInstanceID.NotFound",
    "InvalidGroup.NotFound",
    "InvalidLaunchTemplateId.NotFound",
    "InvalidLaunchTemplateId.NotFoundException",
    "InvalidLaunchTemplateName.NotFoundException",
    "InvalidKeyPair.NotFound",
}


class LaunchError(RuntimeError):
    """A launch or teardown cannot go on; the message says what to do."""


@dataclass
class LaunchRecord:
    """build/<name>/aws-launch.json: the launch's id, region, how its instances are reached,
    and every resource it made."""

    path: Path
    data: dict[str, Any]

    @classmethod
    def start(cls, settings: LaunchSettings, image: Baked) -> LaunchRecord:
        path = launch_record_path(settings)
        if path.exists() and json.loads(path.read_text()).get("resources"):
            raise LaunchError(
                f"a launch is already recorded in {path}: `./bake teardown --cloud aws` it first"
                " (one launch per build directory; --build-name gives another)"
            )
        record = cls(
            path,
            {
                "launch_id": secrets.token_hex(4),
                "region": settings.region,
                "ssh_user": image.ssh_username,
                "ssh_interface": settings.ssh_interface,
                "ssh_private_key_file": settings.ssh_private_key_file,
                # This machine reaches the API through --allow-cidr, or from inside the VPC.
                "api_reachable": bool(settings.allow_cidr) or settings.ssh_interface == "private_ip",
                "cluster": settings.cluster if settings.workers else "",
                # A controller's replacement (an upgrade) reads its cluster's DAG bundle here.
                "dags_s3_uri": settings.dags_s3_uri if settings.workers else "",
                "deployment": settings.cluster if settings.workers else settings.deployment,
                "resources": [],
            },
        )
        record.save()
        return record

    @classmethod
    def load(cls, settings: Target) -> LaunchRecord | None:
        path = launch_record_path(settings)
        return cls(path, json.loads(path.read_text())) if path.exists() else None

    @property
    def launch_id(self) -> str:
        return str(self.data["launch_id"])

    @property
    def name(self) -> str:
        return f"airflow-ami-{self.launch_id}"

    def add(self, kind: str, resource_id: str, **extra: str) -> None:
        self.data["resources"].append({"kind": kind, "id": resource_id, **extra})
        self.save()

    @contextmanager
    def making(self, kind: str, resource_id: str = "", **find: str) -> Iterator[dict[str, str]]:
        """Record a resource before the call that makes it (`resource_id` its name, or empty
        with `find` saying how teardown finds it until the caller sets its id). An error from
        AWS means nothing was made, so its entry goes again; an interruption keeps it."""
        entry = {"kind": kind, "id": resource_id, **find}
        self.data["resources"].append(entry)
        self.save()
        try:
            yield entry
        except botocore.exceptions.ClientError:
            self.data["resources"].remove(entry)
            self.save()
            raise
        self.save()

    def of(self, kind: str) -> list[dict[str, str]]:
        return [r for r in self.data["resources"] if r["kind"] == kind]

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, sort_keys=True) + "\n")
        tmp.replace(self.path)


def launch_record_path(settings: Target) -> Path:
    return BuildDir.of(settings).root / "aws-launch.json"


def _tags(settings: LaunchSettings, record: LaunchRecord, ami_id: str, name: str) -> list[dict[str, str]]:
    ours = {LAUNCH_TAG: ami_id, LAUNCH_ID_TAG: record.launch_id, "Name": name}
    return [{"Key": k, "Value": v} for k, v in {**dict(settings.tags), **ours}.items()]


def _spec(resource: str, tags: list[dict[str, str]]) -> dict[str, Any]:
    return {"ResourceType": resource, "Tags": tags}


def make_key_pair(ec2: Any, record: LaunchRecord, tags: list[dict[str, str]]) -> str:
    """The launch's own key pair; its private key only in build/<name>/ (0600)."""
    key_file = record.path.parent / f"{record.name}.pem"
    with record.making("key_pair", record.name, key_file=str(key_file)):
        key = ec2.create_key_pair(KeyName=record.name, TagSpecifications=[_spec("key-pair", tags)])
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key["KeyMaterial"])
    return str(key_file)


def network(ec2: Any, settings: LaunchSettings) -> tuple[str, str]:
    """(VPC id, subnet id): --subnet-id's, or the default VPC and its first default subnet."""
    if settings.subnet_id:
        subnet = ec2.describe_subnets(SubnetIds=[settings.subnet_id])["Subnets"][0]
        return str(subnet["VpcId"]), settings.subnet_id
    vpcs = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
    if not vpcs:
        raise LaunchError(f"no default VPC in {settings.region}: pass --subnet-id")
    vpc = vpcs[0]["VpcId"]
    subnets = ec2.describe_subnets(
        Filters=[{"Name": "vpc-id", "Values": [vpc]}, {"Name": "default-for-az", "Values": ["true"]}]
    )["Subnets"]
    if not subnets:
        raise LaunchError(f"the default VPC {vpc} has no default subnet: pass --subnet-id")
    return str(vpc), str(sorted(subnets, key=lambda s: s["AvailabilityZone"])[0]["SubnetId"])


def make_security_group(
    ec2: Any,
    settings: LaunchSettings,
    image: Baked,
    record: LaunchRecord,
    *,
    vpc: str,
    tags: list[dict[str, str]],
) -> str:
    """The launch's group: SSH and the image's API port from --allow-cidr only (none: no
    inbound rule); a cluster's broker, execution API and worker logs between its members."""
    with record.making("security_group", name=record.name, vpc=vpc) as entry:
        entry["id"] = group = ec2.create_security_group(
            GroupName=record.name,
            Description=f"airflow-ami launch {record.launch_id}",
            VpcId=vpc,
            TagSpecifications=[_spec("security-group", tags)],
        )["GroupId"]
    rules = [
        {"IpProtocol": "tcp", "FromPort": port, "ToPort": port, **ip_ranges(cidr)}
        for cidr in settings.allow_cidr
        for port in (22, image.api_port)
    ]
    if settings.workers:
        rules += [
            {"IpProtocol": "tcp", "FromPort": port, "ToPort": port, "UserIdGroupPairs": [{"GroupId": group}]}
            for port in cluster_ports(image)
        ]
    if rules:
        ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=rules)
    return str(group)


def ip_ranges(cidr: str) -> dict[str, list[dict[str, str]]]:
    """An ingress rule's source: an IPv6 range goes where EC2 keeps IPv6 ranges."""
    if ipaddress.ip_network(cidr, strict=False).version == 6:
        return {"Ipv6Ranges": [{"CidrIpv6": cidr}]}
    return {"IpRanges": [{"CidrIp": cidr}]}


def instance_data(
    ec2: Any, settings: LaunchSettings, ami_id: str, group: str, *, key_name: str, user_data: str
) -> dict[str, Any]:
    """What the controller and the workers' launch template share: IMDSv2 only, an
    encrypted root volume, the launch's group, the optional instance profile."""
    images = ec2.describe_images(ImageIds=[ami_id])["Images"]
    if not images:
        raise LaunchError(f"no AMI {ami_id} in {settings.region}: `./bake build-ami` or pass --ami")
    ebs: dict[str, Any] = {
        "Encrypted": True,
        "VolumeType": "gp3",
        "VolumeSize": settings.volume_size,
        "DeleteOnTermination": True,
    }
    if settings.kms_key_id:
        ebs["KmsKeyId"] = settings.kms_key_id
    data: dict[str, Any] = {
        "ImageId": ami_id,
        "InstanceType": settings.instance_type,
        "KeyName": key_name,
        "SecurityGroupIds": [group],
        "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled"},
        "BlockDeviceMappings": [{"DeviceName": images[0]["RootDeviceName"], "Ebs": ebs}],
    }
    if user_data:
        data["UserData"] = user_data
    if settings.iam_instance_profile:
        data["IamInstanceProfile"] = {"Name": settings.iam_instance_profile}
    return data


def run_controller(
    ec2: Any, settings: LaunchSettings, record: LaunchRecord, data: dict[str, Any], tags: list[dict[str, str]]
) -> dict[str, Any]:
    params = {**data, "MinCount": 1, "MaxCount": 1}
    params["TagSpecifications"] = [_spec("instance", tags), _spec("volume", tags)]
    if settings.subnet_id:
        params["SubnetId"] = settings.subnet_id
    name = next(t["Value"] for t in tags if t["Key"] == "Name")
    with record.making("instance", name=name) as entry:
        described = ec2.run_instances(**params)["Instances"][0]
        entry["id"] = described["InstanceId"]
    return dict(described)


def make_workers(
    settings: LaunchSettings,
    record: LaunchRecord,
    data: dict[str, Any],
    subnet: str,
    tags: list[dict[str, str]],
) -> str:
    """A launch template of the worker and the cluster's Auto Scaling group of --workers of it
    (between --min-workers and --max-workers), made with its lifecycle hook, and its policy."""
    ec2 = client(settings, settings.region)
    with record.making("launch_template", record.name):
        template = ec2.create_launch_template(
            LaunchTemplateName=record.name,
            LaunchTemplateData={
                **data,
                # RunInstances encodes user data itself; a launch template takes it encoded.
                "UserData": base64.b64encode(data["UserData"].encode()).decode(),
                "TagSpecifications": [_spec("instance", tags), _spec("volume", tags)],
            },
            TagSpecifications=[_spec("launch-template", tags)],
        )["LaunchTemplate"]["LaunchTemplateId"]
    asg = client(settings, settings.region, service="autoscaling")
    name = autoscaling.worker_group_name(settings.cluster)
    try:
        with record.making("auto_scaling_group", name):
            autoscaling.create_worker_group(
                asg,
                name,
                launch_template=template,
                sizes=(settings.min_workers, settings.workers, settings.max_workers),
                placement={"VPCZoneIdentifier": subnet},
                tags=[{"Key": t["Key"], "Value": t["Value"], "PropagateAtLaunch": False} for t in tags],
            )
    except botocore.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "AlreadyExists":
            raise
        raise LaunchError(
            f"cluster {settings.cluster} already has its worker group {name} in {settings.region}:"
            " tear that launch down first, or name another --cluster"
        ) from None
    record.add("lifecycle_hook", contract.LIFECYCLE_HOOK, group=name)
    with record.making("scaling_policy", autoscaling.policy_name(name), group=name):
        autoscaling.put_queue_depth_policy(asg, name, settings.cluster, settings.worker_concurrency)
    return str(template)


def wait_status_ok(ec2: Any, instance_id: str, out: TextIO) -> None:
    """Until EC2's instance and system status checks pass, with progress."""
    started = time.monotonic()
    while True:
        statuses = ec2.describe_instance_status(InstanceIds=[instance_id], IncludeAllInstances=True)[
            "InstanceStatuses"
        ]
        state = statuses[0] if statuses else {}
        checks = (state.get("InstanceStatus", {}).get("Status"), state.get("SystemStatus", {}).get("Status"))
        waited = time.monotonic() - started
        out.write(
            f"launch: {instance_id} {state.get('InstanceState', {}).get('Name', 'pending')},"
            f" status checks {'/'.join(str(c) for c in checks)} ({waited:.0f} s)\n"
        )
        out.flush()
        if checks == ("ok", "ok"):
            return
        if state.get("InstanceState", {}).get("Name") in ("shutting-down", "terminated", "stopped"):
            raise LaunchError(
                f"{instance_id} stopped before its status checks passed: see its console output"
            )
        if waited > STATUS_TIMEOUT:
            raise LaunchError(f"{instance_id}: status checks not ok after {STATUS_TIMEOUT:.0f} s")
        time.sleep(POLL)


def console_host_keys(ec2: Any, instance_id: str) -> tuple[str, ...]:
    """The SSH host keys cloud-init printed to the instance's console ("TYPE BASE64"), or
    () while the console has not shown them yet."""
    output = ec2.get_console_output(InstanceId=instance_id).get("Output") or ""
    found = HOST_KEYS_RE.search(output)
    lines = found.group(1).splitlines() if found else []
    return tuple(sorted(" ".join(line.split()[:2]) for line in lines if len(line.split()) >= 2))


def to_instance(
    record: LaunchRecord, described: dict[str, Any], key_file: str, role: str, host_keys: tuple[str, ...]
) -> InstanceRecord:
    private = record.data["ssh_interface"] == "private_ip"
    return InstanceRecord(
        cloud="aws",
        instance_id=described["InstanceId"],
        ami_id=described["ImageId"],
        region=record.data["region"],
        address=str(described.get("PrivateIpAddress" if private else "PublicIpAddress", "")),
        ssh_user=record.data["ssh_user"],
        ssh_key_file=key_file,
        role=role,
        cluster=record.data["cluster"],
        deployment=record.data.get("deployment", ""),
        deployment_address=next((a["public_ip"] for a in record.of("address")), "")
        if role != "worker"
        else "",
        host_keys=host_keys,
    )


def allocate_deployment_address(ec2: Any, record: LaunchRecord, tags: list[dict[str, str]]) -> None:
    """The deployment's Elastic IP, recorded the moment AWS returns it."""
    with record.making("address") as entry:
        address = ec2.allocate_address(Domain="vpc", TagSpecifications=[_spec("elastic-ip", tags)])
        entry.update(id=address["AllocationId"], public_ip=address["PublicIp"])


def associate(ec2: Any, record: LaunchRecord, instance_id: str) -> None:
    for address in record.of("address"):
        ec2.associate_address(AllocationId=address["id"], InstanceId=instance_id, AllowReassociation=True)


def launch(
    settings: LaunchSettings, image: Baked, out: TextIO = sys.stdout, *, allocate_address: bool = True
) -> list[InstanceRecord]:
    """Launch the instance (with --workers: the controller and the workers' group) and
    wait for its status checks; returns the controller (or instance) first, then the
    workers running so far. A named deployment's first launch allocates its address;
    an upgrade's new instance (`allocate_address` False) takes the old one's."""
    record = LaunchRecord.start(settings, image)
    ec2 = client(settings, settings.region)
    role = "controller" if settings.workers else "standalone"
    ami_id = image.ami_id
    tags = _tags(settings, record, ami_id, f"{record.name}-{role}")
    key_name = settings.ssh_keypair_name or record.name
    if not settings.ssh_keypair_name:
        make_key_pair(ec2, record, tags)
    vpc, subnet = network(ec2, settings)
    group = make_security_group(ec2, settings, image, record, vpc=vpc, tags=tags)
    user_data = launch_user_data(settings, role, settings.dags_s3_uri)
    data = instance_data(ec2, settings, ami_id, group, key_name=key_name, user_data=user_data)
    described = run_controller(ec2, settings, record, data, tags)
    if record.data["deployment"] and allocate_address:
        allocate_deployment_address(ec2, record, tags)
        associate(ec2, record, described["InstanceId"])
    if settings.workers:
        controller = described["PrivateIpAddress"]
        group = autoscaling.worker_group_name(settings.cluster)
        worker_data = {
            **data,
            "UserData": launch_user_data(settings, "worker", settings.dags_s3_uri, controller, group),
            "IamInstanceProfile": {"Name": settings.worker_iam_instance_profile},
        }
        worker_tags = _tags(settings, record, ami_id, f"{record.name}-worker")
        make_workers(settings, record, worker_data, subnet, worker_tags)
    wait_status_ok(ec2, described["InstanceId"], out)
    wait_host_keys(ec2, described["InstanceId"], out)
    return instances(settings)


def wait_host_keys(ec2: Any, instance_id: str, out: TextIO) -> None:
    """Until the console shows the instance's SSH host keys (EC2 posts console output
    a while after boot); launch records them and ssh trusts no other."""
    started = time.monotonic()
    while not console_host_keys(ec2, instance_id):
        if time.monotonic() - started > STATUS_TIMEOUT:
            raise LaunchError(
                f"{instance_id}: no SSH host keys in its console output after {STATUS_TIMEOUT:.0f} s"
                " (cloud-init prints them at boot): see `aws ec2 get-console-output`"
            )
        out.write(f"launch: {instance_id} waiting for its SSH host keys on the console\n")
        out.flush()
        time.sleep(POLL)


def launch_replacement(settings: LaunchSettings, image: Baked, out: TextIO = sys.stdout) -> InstanceRecord:
    """An instance of the old one's role (`settings.role`: standalone, or a cluster's controller
    with the DAG bundle its launch recorded) in the recorded launch (its security group and
    key pair), recorded the moment AWS returns it, for an upgrade to switch to or remove."""
    record = LaunchRecord.load(settings)
    if record is None or not record.of("security_group"):
        raise LaunchError(f"no launch recorded in {launch_record_path(settings)}: `./bake launch` first")
    ec2 = client(settings, record.data["region"])
    tags = _tags(settings, record, image.ami_id, f"{record.name}-{settings.role}")
    keys = record.of("key_pair")
    key_name = keys[0]["id"] if keys else settings.ssh_keypair_name
    # A launch recorded before the DAG bundle was: the upgrade's --dags-s3-uri.
    dags = (record.data.get("dags_s3_uri") or settings.dags_s3_uri) if settings.role == "controller" else ""
    if settings.role == "controller" and not dags:
        raise LaunchError(
            f"{launch_record_path(settings)} records no DAG bundle of cluster {settings.cluster}:"
            " give the upgrade --dags-s3-uri s3://BUCKET/PREFIX (the cluster's)"
        )
    user_data = launch_user_data(settings, settings.role, dags)
    data = instance_data(
        ec2,
        settings,
        image.ami_id,
        record.of("security_group")[0]["id"],
        key_name=key_name,
        user_data=user_data,
    )
    described = run_controller(ec2, settings, record, data, tags)
    wait_status_ok(ec2, described["InstanceId"], out)
    wait_host_keys(ec2, described["InstanceId"], out)
    (found,) = [i for i in instances(settings) if i.instance_id == described["InstanceId"]]
    return found


def api_url(target: Target, image: Baked, instance: InstanceRecord) -> str:
    """The API's base URL if this machine can reach it (--allow-cidr, or private_ip
    from inside the VPC), else ""."""
    record = LaunchRecord.load(target)
    if not instance.address or record is None or not record.data["api_reachable"]:
        return ""
    return image.api_url(instance.address)


def port_forward_command(image: Baked, instance: InstanceRecord) -> str:
    params = f"portNumber={image.api_port},localPortNumber={image.api_port}"
    return (
        f"aws ssm start-session --region {instance.region} --target {instance.instance_id}"
        f" --document-name AWS-StartPortForwardingSession --parameters {params}"
    )


def workers(settings: Target, record: LaunchRecord, key_file: str) -> list[InstanceRecord]:
    """The workers of the launch's Auto Scaling group that are running now."""
    groups = [r["id"] for r in record.of("auto_scaling_group")]
    if not groups:
        return []
    autoscaling = client(settings, settings.region, service="autoscaling")
    found = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=groups)["AutoScalingGroups"]
    ids = [i["InstanceId"] for g in found for i in g.get("Instances", [])]
    if not ids:
        return []
    ec2 = client(settings, settings.region)
    reservations = ec2.describe_instances(InstanceIds=ids)["Reservations"]
    return [
        to_instance(record, i, key_file, "worker", console_host_keys(ec2, i["InstanceId"]))
        for r in reservations
        for i in r["Instances"]
        if i["State"]["Name"] in ("pending", "running")
    ]


def scale(
    settings: LaunchSettings,
    count: int,
    out: TextIO = sys.stdout,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Set the launch's Auto Scaling group (of --cluster, when named) to `count` workers (its
    MinSize/MaxSize widened only when `count` lies outside them), then wait until it has
    them: each leaving worker drains and completes its lifecycle action, and is reported
    with how long it took. Returns the group's name."""
    record = LaunchRecord.load(settings)
    groups = record.of("auto_scaling_group") if record else []
    if record is None or not groups:
        raise LaunchError(
            f"no Auto Scaling group recorded in {launch_record_path(settings)}:"
            " launch a cluster first (`./bake launch --cloud aws --workers N ...`)"
        )
    name = groups[0]["id"]
    recorded = record.data["cluster"]
    if settings.cluster not in ("", recorded):
        raise LaunchError(
            f"{launch_record_path(settings)} records cluster {recorded}, not {settings.cluster}:"
            f" scale it with --cluster {recorded}, or give the other cluster's --build-name"
        )
    asg = client(settings, settings.region, service="autoscaling")
    group = autoscaling.described(asg, name)
    before = [i["InstanceId"] for i in group["Instances"]]
    asg.update_auto_scaling_group(
        AutoScalingGroupName=name, DesiredCapacity=count, **autoscaling.widened(group, count)
    )
    out.write(f"scale: {name} from {group['DesiredCapacity']} to {count} workers\n")
    autoscaling.wait_until_scaled(asg, name, count, before, out=out, poll=POLL, sleep=sleep)
    return name


@contextmanager
def _unless_gone() -> Iterator[None]:
    try:
        yield
    except botocore.exceptions.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code not in GONE and "not found" not in str(exc).lower():
            raise


def teardown(settings: Target, out: TextIO = sys.stdout) -> list[str]:
    """Delete what the launch record lists, wait until it is gone, then drop the record.

    Safe to repeat, and after a launch that failed at any step."""
    record = LaunchRecord.load(settings)
    if record is None:
        return []
    ec2 = client(settings, record.data["region"])
    find_unanswered(ec2, record)
    removed: list[str] = []
    instances = [r["id"] for r in record.of("instance")]
    asg = client(settings, record.data["region"], service="autoscaling")
    # The policy (and its alarms) and the hook go explicitly, before their group.
    for policy in record.of("scaling_policy"):
        with _unless_gone():
            autoscaling.delete_policy(asg, policy["group"], policy["id"])
        removed.append(policy["id"])
    for hook in record.of("lifecycle_hook"):
        with _unless_gone():
            autoscaling.delete_hook(asg, hook["group"], hook["id"])
        removed.append(hook["id"])
    for group in record.of("auto_scaling_group"):
        instances += _delete_auto_scaling_group(settings, record, group["id"])
        removed.append(group["id"])
    if instances:
        with _unless_gone():
            ec2.terminate_instances(InstanceIds=instances)
        _wait_terminated(ec2, instances, out)
        removed += [r["id"] for r in record.of("instance")]
    for address in record.of("address"):
        with _unless_gone():
            ec2.release_address(AllocationId=address["id"])
        removed.append(address["id"])
    for template in record.of("launch_template"):
        with _unless_gone():
            ec2.delete_launch_template(LaunchTemplateName=template["id"])
        removed.append(template["id"])
    for group in record.of("security_group"):
        with _unless_gone():
            ec2.delete_security_group(GroupId=group["id"])
        removed.append(group["id"])
    for key in record.of("key_pair"):
        with _unless_gone():
            ec2.delete_key_pair(KeyName=key["id"])
        Path(key["key_file"]).unlink(missing_ok=True)
        removed.append(key["id"])
    record.path.unlink()
    return removed


def find_unanswered(ec2: Any, record: LaunchRecord) -> None:
    """Give each resource whose create call never answered (an empty id) the ids of what
    that call made, found by what the record kept for it; none found: nothing was made."""
    launch = [{"Name": f"tag:{LAUNCH_ID_TAG}", "Values": [record.launch_id]}]
    finders: dict[str, Callable[[dict[str, str]], list[str]]] = {
        "security_group": lambda e: [
            g["GroupId"]
            for g in ec2.describe_security_groups(
                Filters=[
                    {"Name": "group-name", "Values": [e["name"]]},
                    {"Name": "vpc-id", "Values": [e["vpc"]]},
                ]
            )["SecurityGroups"]
        ],
        "instance": lambda e: [
            i["InstanceId"]
            for r in ec2.describe_instances(Filters=[*launch, {"Name": "tag:Name", "Values": [e["name"]]}])[
                "Reservations"
            ]
            for i in r["Instances"]
            if i["State"]["Name"] != "terminated"
        ],
        "address": lambda e: [a["AllocationId"] for a in ec2.describe_addresses(Filters=launch)["Addresses"]],
    }
    resources: list[dict[str, str]] = []
    for entry in record.data["resources"]:
        if entry["id"]:
            resources.append(entry)
            continue
        known = {r["id"] for r in record.data["resources"]}
        resources += [{**entry, "id": found} for found in finders[entry["kind"]](entry) if found not in known]
    record.data["resources"] = resources
    record.save()


def _delete_auto_scaling_group(settings: Target, record: LaunchRecord, name: str) -> list[str]:
    """Force-delete the group (it terminates its instances); returns them, to wait for."""
    autoscaling = client(settings, record.data["region"], service="autoscaling")
    found = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"]
    if not found:
        return []
    ids = [i["InstanceId"] for i in found[0].get("Instances", [])]
    with _unless_gone():
        autoscaling.delete_auto_scaling_group(AutoScalingGroupName=name, ForceDelete=True)
    deadline = time.monotonic() + STATUS_TIMEOUT
    while autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"]:
        if time.monotonic() > deadline:
            raise LaunchError(
                f"Auto Scaling group {name} still there after {STATUS_TIMEOUT:.0f} s: run teardown again"
            )
        time.sleep(POLL)
    return ids


def _wait_terminated(ec2: Any, ids: list[str], out: TextIO) -> None:
    deadline = time.monotonic() + STATUS_TIMEOUT
    while left := _not_terminated(ec2, ids):
        out.write(f"teardown: waiting for {', '.join(left)} to terminate\n")
        out.flush()
        if time.monotonic() > deadline:
            raise LaunchError(
                f"{', '.join(left)} not terminated after {STATUS_TIMEOUT:.0f} s: run teardown again"
            )
        time.sleep(POLL)


def _not_terminated(ec2: Any, ids: list[str]) -> list[str]:
    try:
        reservations = ec2.describe_instances(InstanceIds=ids)["Reservations"]
    except botocore.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in GONE:
            return []
        raise
    return [
        i["InstanceId"] for r in reservations for i in r["Instances"] if i["State"]["Name"] != "terminated"
    ]


def instances(settings: Target) -> list[InstanceRecord]:
    """What the recorded launch runs now (the controller or instance first)."""
    record = LaunchRecord.load(settings)
    if record is None:
        return []
    ids = [r["id"] for r in record.of("instance") if r["id"]]
    keys = record.of("key_pair")
    key_file = keys[0]["key_file"] if keys else record.data["ssh_private_key_file"]
    ec2 = client(settings, record.data["region"])
    found: list[InstanceRecord] = []
    with _unless_gone():
        for r in ec2.describe_instances(InstanceIds=ids)["Reservations"]:
            found += [
                to_instance(
                    record,
                    i,
                    key_file,
                    "controller" if record.of("auto_scaling_group") else "standalone",
                    console_host_keys(ec2, i["InstanceId"]),
                )
                for i in r["Instances"]
                if i["State"]["Name"] != "terminated"
            ]
    return [*found, *workers(settings, record, key_file)]


class AwsCloud:
    """Packer launches its own build instance; instances run on EC2."""

    name = "aws"

    @contextmanager
    def build_host(self, settings: BakeSettings) -> Iterator[BuildHost]:
        yield BuildHost(settings)

    def image_tags(self, target: Target, ami_id: str) -> dict[str, str]:
        return image_tags(target, ami_id)

    def client(self, target: Target, service: str) -> Any:
        return client(target, target.region, service=service)

    def launch(self, settings: LaunchSettings, image: Baked) -> InstanceRecord:
        return launch(settings, image)[0]

    def launch_cluster(self, settings: LaunchSettings, image: Baked) -> list[InstanceRecord]:
        return launch(settings, image)

    def launch_replacement(self, settings: LaunchSettings, image: Baked) -> InstanceRecord:
        return launch_replacement(settings, image)

    def api_url(self, target: Target, image: Baked, instance: InstanceRecord) -> str:
        return api_url(target, image, instance)

    def scale(self, settings: LaunchSettings, count: int) -> str:
        return scale(settings, count)

    def move_address(self, target: Target, instance: InstanceRecord) -> InstanceRecord:
        record = LaunchRecord.load(target)
        if record is None or not record.of("address"):
            raise LaunchError(f"no deployment address recorded in {launch_record_path(target)}")
        associate(client(target, record.data["region"]), record, instance.instance_id)
        return dataclasses.replace(instance, deployment_address=record.of("address")[0]["public_ip"])

    def remove_instance(self, target: Target, instance: InstanceRecord) -> None:
        ec2 = client(target, instance.region)
        with _unless_gone():
            ec2.terminate_instances(InstanceIds=[instance.instance_id])
        _wait_terminated(ec2, [instance.instance_id], sys.stdout)
        record = LaunchRecord.load(target)
        if record is not None:
            record.data["resources"] = [
                r for r in record.data["resources"] if r["id"] != instance.instance_id
            ]
            record.save()

    def instances(self, target: Target) -> list[InstanceRecord]:
        return instances(target)

    def teardown(self, target: Target) -> list[str]:
        return teardown(target)
