"""The local cloud: a build host for Packer, launches, teardown (the `Cloud` interface).

moto keeps running between `bake` invocations (build -> launch -> verify ->
teardown); its port is in the state file. moto holds AMIs in memory only, so
images are kept on disk by AMI id (base images under a deterministic id) and
handed to every moto we start (MOTO_AMIS_PATH): an AMI id stays valid across
teardown and later launches.

A cluster's workers are members of its Auto Scaling group in moto, made by the same
code as on AWS (clouds/autoscaling.py: its lifecycle hook and scaling policy). moto never
starts or stops an instance of it: the group's capacity is only the workers attached as
they boot. A scale-in is EC2's: the leaving worker is terminated in its group, its IMDS
says Terminated, it drains and completes its lifecycle action (or the hook times out),
and only then does its container go.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import json
import os
import secrets
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import botocore.exceptions

from airflow_ami.clouds import BuildHost, InstanceRecord, autoscaling, cluster_ports, launch_user_data
from airflow_ami.clouds.local.baseimage import base_ami_name, base_dir, ensure_base_image, prune_images
from airflow_ami.clouds.local.container import (
    INSTANCE_TYPE,
    boot_instance,
    destroy_instance,
    read_host_keys,
    set_lifecycle_state,
    set_metadata_service,
    shutdown_instance,
    update_record,
    wait_for_ssh,
)
from airflow_ami.clouds.local.moto import (
    aws_env,
    ec2_client,
    endpoint_url,
    moto_ami_entry,
    moto_client,
    moto_has_image,
    moto_is_running,
    start_moto,
)
from airflow_ami.clouds.local.network import (
    AWS_API_URL,
    DEPLOYMENT_ADDRESSES,
    Slot,
    attach_address,
    detach_address,
)
from airflow_ami.clouds.local.reaper import reap
from airflow_ami.clouds.local.state import locked_state
from airflow_ami.clouds.local.system import (
    PREFIX,
    LocalCloudError,
    cache_dir,
    log,
    require_root,
    require_tools,
    run,
    safe_rmtree,
    stop_process,
)
from airflow_ami.image.record import Baked
from airflow_ami.seam import contract
from airflow_ami.settings import BakeSettings, LaunchSettings, Target
from airflow_ami.settings.fields import TAG_PREFIX

KEEP_AMIS = 3
# Seconds between looks at a scale-in's group (moto answers at once; the workers take their time).
SCALE_POLL = 2.0


@contextlib.contextmanager
def interrupts_as_exceptions() -> Iterator[None]:
    """SIGTERM/SIGHUP raise KeyboardInterrupt like Ctrl-C, so `finally` cleanup runs."""

    def _raise(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {sig: signal.signal(sig, _raise) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def amis_dir(cache: Path) -> Path:
    return cache / "amis"


def keys_dir(cache: Path) -> Path:
    return cache / "keys"


# ---- images and AMIs ----


def base_ami_id(digest: str) -> str:
    # Derived from the recipe hash so the base AMI keeps its id across moto restarts.
    return "ami-" + hashlib.sha256(digest.encode()).hexdigest()[:17]


def local_images(cache: Path) -> dict[str, dict[str, Any]]:
    """ami_id -> {name, description, rootfs, created} for every image on disk.

    Base images and captured AMIs alike: this is what moto is started with,
    so AMI ids survive a moto restart.
    """
    images: dict[str, dict[str, Any]] = {}
    for home in sorted(base_dir(cache).glob("[!.]*")):
        images[base_ami_id(home.name)] = {
            "name": base_ami_name(home.name),
            "description": f"local-cloud Debian base image {home.name}",
            "rootfs": str(home / "rootfs"),
            "created": home.stat().st_mtime,
        }
    for meta_file in sorted(amis_dir(cache).glob("*/meta.json")):
        meta = json.loads(meta_file.read_text())
        images[meta["ami_id"]] = {
            "name": meta["name"],
            "description": f"local-cloud image built from {meta.get('source_ami', '?')}",
            "rootfs": str(meta_file.parent / "rootfs"),
            "created": meta["built"],
            "tags": meta.get("tags", {}),
        }
    return images


def write_moto_amis(cache: Path) -> Path:
    entries = [
        moto_ami_entry(ami_id, img["name"], img["description"], img["created"], img.get("tags"))
        for ami_id, img in local_images(cache).items()
    ]
    path = cache / "moto-amis.json"
    path.write_text(json.dumps(entries, indent=2) + "\n")
    return path


def image_rootfs(cache: Path, ami_id: str) -> Path:
    """The image's root file system, marked used now: pruning keeps the most recently used."""
    image = local_images(cache).get(ami_id)
    if not image:
        raise LocalCloudError(f"no local image for {ami_id}: build one with `./bake build-ami --cloud local`")
    rootfs = Path(image["rootfs"])
    os.utime(rootfs.parent)
    return rootfs


def capture_image(cache: Path, record: dict[str, Any], ami_id: str, meta: dict[str, Any]) -> Path:
    """Move a stopped instance's rootfs into the image store as the image of ami_id."""
    target = amis_dir(cache) / ami_id
    safe_rmtree(target)
    target.mkdir(parents=True)
    (Path(record["home"]) / "rootfs").rename(target / "rootfs")
    (target / "meta.json").write_text(json.dumps({"ami_id": ami_id, **meta}, indent=2) + "\n")
    prune_images(amis_dir(cache), KEEP_AMIS)
    log.info("captured instance %s as the image of %s", record["instance_id"], ami_id)
    return target / "rootfs"


# ---- moto ----


def ensure_moto(cache: Path, region: str, ami_id: str | None = None) -> tuple[int, bool]:
    """(port, started_now): this cloud's running moto, (re)started to know ami_id.

    moto only learns AMIs of ours at start (MOTO_AMIS_PATH), so a base image
    or capture newer than the running moto means a restart, which is refused
    while instances run (their moto records would vanish).
    """
    with locked_state(cache) as state:
        moto = state["moto"]
        if moto_is_running(moto):
            if ami_id is None or moto_has_image(moto["port"], region, ami_id):
                return int(moto["port"]), False
            if state["instances"]:
                raise LocalCloudError(
                    f"the running moto does not know {ami_id} and instances are up: "
                    "run `./bake teardown` first"
                )
            stop_process(moto["pid"])
        state["moto"] = start_moto(cache / "moto.log", write_moto_amis(cache))
        state["worker_groups"] = {}
        return int(state["moto"]["port"]), True


def stop_moto(cache: Path) -> None:
    with locked_state(cache) as state:
        if state["moto"]:
            stop_process(state["moto"]["pid"])
        state["moto"] = None


# ---- keys ----


@dataclasses.dataclass(frozen=True)
class KeyPair:
    name: str
    file: Path
    public: str


def new_key_pair(cache: Path, ec2: Any, purpose: str) -> KeyPair:
    """A fresh ed25519 key on disk, imported into moto as an EC2 key pair."""
    name = f"{PREFIX}{purpose}-{secrets.token_hex(4)}"
    keys_dir(cache).mkdir(parents=True, exist_ok=True, mode=0o700)
    path = keys_dir(cache) / name
    for old in (path, path.with_suffix(".pub")):
        old.unlink(missing_ok=True)
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(path)])
    key = KeyPair(name, path, path.with_suffix(".pub").read_text().strip())
    ec2.import_key_pair(KeyName=name, PublicKeyMaterial=key.public.encode())
    return key


def boot(
    cache: Path,
    rootfs: Path,
    ami_id: str,
    key: KeyPair,
    *,
    region: str,
    ssh_user: str,
    moto_port: int,
    **kw: Any,
) -> dict[str, Any]:
    """A container of `rootfs` as an instance of `ami_id`, with `key` for the default user."""
    return boot_instance(
        cache,
        rootfs,
        ami_id=ami_id,
        region=region,
        public_key=key.public,
        ssh_user=ssh_user,
        ssh_key_file=str(key.file),
        aws_api_port=moto_port,
        **kw,
    )


# ---- clusters ----


DAGS_PREFIX = "dags"


def dags_bucket(cluster: str) -> str:
    return f"airflow-ami-{cluster}-dags"


def membership(cache: Path, settings: LaunchSettings, image: Baked, moto_port: int) -> dict[str, Any]:
    """How an instance joins its deployment and cluster: its security group, its user data
    and a worker's Auto Scaling group.

    A controller's cluster gets its DAG bundle bucket in moto; a worker finds its
    controller among the running instances, and its cluster's group (made with the first
    worker); a launch's backup bucket is made in moto as a user makes theirs on AWS.
    """
    if settings.backup_s3_uri:
        s3 = moto_client("s3", moto_port, settings.region)
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            s3.create_bucket(Bucket=contract.backup_location(settings.backup_s3_uri, "-")[0])
    dags = f"s3://{dags_bucket(settings.cluster)}/{DAGS_PREFIX}" if settings.role != "standalone" else ""
    controller = controller_of(cache, settings, moto_port)
    group = autoscaling.worker_group_name(settings.cluster) if settings.role == "worker" else ""
    user_data = launch_user_data(settings, settings.role, dags, controller, group)
    if group:
        worker_group(cache, moto_port, settings, image.ami_id, user_data)
    if settings.role == "standalone":
        return {"user_data": user_data, "deployment": settings.deployment} if user_data else {}
    return {
        "cluster": settings.cluster,
        "deployment": settings.cluster,
        "sg_ports": cluster_ports(image),
        "role": settings.role,
        "user_data": user_data,
        "autoscaling_group": group,
    }


def worker_group(cache: Path, moto_port: int, settings: LaunchSettings, ami_id: str, user_data: str) -> str:
    """The cluster's Auto Scaling group in moto, made as on AWS when its first worker launches:
    capacity 0 (moto starts no instance of it), a launch template of the AMI and the workers'
    user data (what a scale-out launches, group_user_data), the hook and the scaling policy."""
    name = autoscaling.worker_group_name(settings.cluster)
    asg = moto_client("autoscaling", moto_port, settings.region)
    if not asg.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"]:
        data = {"ImageId": ami_id, "InstanceType": INSTANCE_TYPE, "UserData": _b64(user_data)}
        template = ec2_client(moto_port, settings.region).create_launch_template(
            LaunchTemplateName=name, LaunchTemplateData=data
        )["LaunchTemplate"]["LaunchTemplateId"]
        autoscaling.create_worker_group(
            asg,
            name,
            launch_template=template,
            sizes=(0, 0, settings.max_workers),
            placement={"AvailabilityZones": [f"{settings.region}a"]},
            tags=[],
        )
        autoscaling.put_queue_depth_policy(asg, name, settings.cluster, settings.worker_concurrency)
    with locked_state(cache) as state:
        state["worker_groups"][name] = settings.region
    return name


def group_user_data(moto_port: int, region: str, group: str) -> str | None:
    """The user data the group's launch template gives its workers (None: no group yet, its
    first worker makes it; or one made before templates held it)."""
    try:
        versions = ec2_client(moto_port, region).describe_launch_template_versions(
            LaunchTemplateName=group, Versions=["$Latest"]
        )["LaunchTemplateVersions"]
    except botocore.exceptions.ClientError:
        return None
    encoded = versions[0]["LaunchTemplateData"].get("UserData") if versions else None
    return base64.b64decode(encoded).decode() if encoded else None


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def join_group(asg: Any, group: str, instance_id: str) -> None:
    """A booted worker joins its group in service, as its launch by the group would have it
    (the group's MaxSize grows if it is full: a worker launched by hand is let in)."""
    described = autoscaling.described(asg, group)
    bounds = autoscaling.widened(described, described["DesiredCapacity"] + 1)
    if bounds:
        asg.update_auto_scaling_group(AutoScalingGroupName=group, **bounds)
    asg.attach_instances(AutoScalingGroupName=group, InstanceIds=[instance_id])


def scale_in(
    asg: Any,
    group: str,
    leaving: list[dict[str, Any]],
    *,
    on_left: Callable[[dict[str, Any]], None],
    out: Any = sys.stdout,
    poll: float = SCALE_POLL,
) -> list[autoscaling.Departure]:
    """The `leaving` workers (state records) let go as an EC2 scale-in does: each terminated in
    its group (the capacity decremented, the worker held in Terminating:Wait by the hook) and
    told by its IMDS; then waited for until the group lets each go, which `on_left` gets."""
    described = autoscaling.described(asg, group)
    before = [i["InstanceId"] for i in described["Instances"]]
    serving = [i for i in described["Instances"] if i["LifecycleState"] == autoscaling.IN_SERVICE]
    by_id = {r["instance_id"]: r for r in leaving}
    for record in leaving:
        asg.terminate_instance_in_auto_scaling_group(
            InstanceId=record["instance_id"], ShouldDecrementDesiredCapacity=True
        )
        set_lifecycle_state(record, "Terminated")
        out.write(f"scale: {record['instance_id']} is leaving: its IMDS says Terminated\n")

    def gone(departure: autoscaling.Departure) -> None:
        if departure.instance_id in by_id:
            on_left(by_id[departure.instance_id])

    return autoscaling.wait_until_scaled(
        asg, group, len(serving) - len(leaving), before, out=out, poll=poll, on_left=gone
    )


def controller_of(cache: Path, settings: LaunchSettings, moto_port: int) -> str:
    """A worker's controller, running in its cluster; a controller's DAG bundle, made."""
    if settings.role == "controller":
        s3 = moto_client("s3", moto_port, settings.region)
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            s3.create_bucket(Bucket=dags_bucket(settings.cluster))
        # Airflow's S3 bundle refuses a prefix with nothing in it.
        s3.put_object(
            Bucket=dags_bucket(settings.cluster),
            Key=f"{DAGS_PREFIX}/README.txt",
            Body=f"The DAG files of cluster {settings.cluster}: every node reads this prefix.\n".encode(),
        )
    if settings.role != "worker":
        return ""
    with locked_state(cache) as state:
        controllers = [
            r
            for r in state["instances"].values()
            if r.get("role") == "controller" and r.get("cluster") == settings.cluster
        ]
    if not controllers:
        raise LocalCloudError(
            f"no controller of cluster {settings.cluster} is running: launch one first"
            f" (--role controller --cluster {settings.cluster})"
        )
    return str(controllers[0]["ip"])


# ---- the cloud ----


class LocalCloud:
    """moto is the EC2 API, systemd-nspawn containers in network namespaces the instances."""

    name = "local"

    @contextlib.contextmanager
    def build_host(self, settings: BakeSettings) -> Iterator[BuildHost]:
        """A container of the base image that Packer provisions through moto.

        Once the AMI exists, `keep_image` powers the container off and keeps
        its rootfs as the AMI's image. On any failure or interrupt the build
        instance is removed, and moto too if this build started it.
        """
        require_root()
        require_tools()
        cache = cache_dir()
        timings: dict[str, float] = {}
        with interrupts_as_exceptions():
            reap(cache)
            t0 = time.monotonic()
            digest, base_rootfs = ensure_base_image(cache)
            timings["base_image"] = time.monotonic() - t0
            base_ami = base_ami_id(digest)
            port, started_moto = ensure_moto(cache, settings.region, base_ami)
            try:
                with _build_instance(settings, cache, port, (base_ami, base_rootfs), timings) as host:
                    yield host
            except BaseException:
                if started_moto:
                    stop_moto(cache)
                raise

    def image_tags(self, target: Target, ami_id: str) -> dict[str, str]:
        """The AMI's tags as moto holds them (Packer tagged it there)."""
        port, _ = ensure_moto(cache_dir(), target.region)
        return _tags_of(ec2_client(port, target.region), ami_id)

    def client(self, target: Target, service: str) -> Any:
        """moto plays every AWS service the instances call."""
        port, _ = ensure_moto(cache_dir(), target.region)
        return moto_client(service, port, target.region)

    def launch(
        self,
        settings: LaunchSettings,
        image: Baked,
        user_data: str | None = None,
        *,
        take_address: bool = True,
        group: str = "",
    ) -> InstanceRecord:
        """RunInstances in moto, then boot a fresh container from the AMI's image.

        The instance keeps running until teardown(). With --role controller|worker
        it joins --cluster (membership()); otherwise it is alone, unreachable from
        other instances. `user_data`, when given, is served instead of the
        document membership() writes (to try a document of one's own, outside any
        group; or a scale-out's, from `group`'s launch template, joining it).
        """
        require_root()
        require_tools()
        cache = cache_dir()
        ami_id = image.ami_id
        with interrupts_as_exceptions():
            reap(cache)
            rootfs = image_rootfs(cache, ami_id)
            port, _ = ensure_moto(cache, settings.region, ami_id)
            joins = membership(cache, settings, image, port)
            if user_data is not None:
                joins.update(user_data=user_data, autoscaling_group=group)
            ec2 = ec2_client(port, settings.region)
            key = new_key_pair(cache, ec2, "launch")
            reservation = ec2.run_instances(
                ImageId=ami_id,
                MinCount=1,
                MaxCount=1,
                InstanceType=INSTANCE_TYPE,
                KeyName=key.name,
                MetadataOptions={"HttpTokens": "required", "HttpEndpoint": "enabled"},
            )
            instance_id = reservation["Instances"][0]["InstanceId"]
            t0 = time.monotonic()
            record: dict[str, Any] = {}
            try:
                record = boot(
                    cache,
                    rootfs,
                    ami_id,
                    key,
                    region=settings.region,
                    ssh_user=image.ssh_username,
                    moto_port=port,
                    instance_id=instance_id,
                    cpu_quota=settings.cpu_quota,
                    **joins,
                )
                wait_for_ssh(record, timeout=300)
                record["host_keys"] = read_host_keys(Path(record["home"]) / "rootfs")
                update_record(cache, record)
                if record["autoscaling_group"]:
                    join_group(
                        moto_client("autoscaling", port, settings.region),
                        record["autoscaling_group"],
                        instance_id,
                    )
            except BaseException:
                if record:
                    destroy_instance(cache, record)
                with contextlib.suppress(Exception):
                    ec2.terminate_instances(InstanceIds=[instance_id])
                raise
        log.info("instance %s up at %s after %.1fs", instance_id, record["ip"], time.monotonic() - t0)
        launched = _instance(record, settings.region)
        if take_address and launched.deployment and launched.role != "worker":
            launched = self.move_address(settings, launched)
        return launched

    def launch_replacement(self, settings: LaunchSettings, image: Baked) -> InstanceRecord:
        return self.launch(settings, image, take_address=False)

    def launch_cluster(self, settings: LaunchSettings, image: Baked) -> list[InstanceRecord]:
        """A controller and --workers workers of --cluster, one launch each."""
        controller = self.launch(dataclasses.replace(settings, role="controller"), image)
        worker = dataclasses.replace(settings, role="worker")
        return [controller, *(self.launch(worker, image) for _ in range(settings.workers))]

    def api_url(self, target: Target, image: Baked, instance: InstanceRecord) -> str:
        """Every local instance is reachable from this machine."""
        return image.api_url(instance.address)

    def scale(self, settings: LaunchSettings, count: int) -> str:
        """--cluster's workers (its group's) to `count`, as EC2 Auto Scaling does it: new ones
        launched from the controller's AMI join the group; leaving ones (the newest first)
        drain and complete their lifecycle action (scale_in), and only then go. Returns the
        group's name."""
        require_root()
        cache = cache_dir()
        with locked_state(cache) as state:
            members = [r for r in state["instances"].values() if r.get("cluster") == settings.cluster]
        controllers = [r for r in members if r.get("role") == "controller"]
        if not controllers:
            raise LocalCloudError(
                f"no controller of cluster {settings.cluster} is running: launch the cluster first"
                f" (`./bake launch --cloud local --workers N --cluster {settings.cluster}`)"
            )
        group = autoscaling.worker_group_name(settings.cluster)
        # The group's workers: one launched with user data of its own is outside it, as on AWS.
        workers = sorted(
            (r for r in members if r.get("role") == "worker" and r.get("autoscaling_group")),
            key=lambda r: r["started"],
        )
        if count > len(workers):
            image = Baked.of(settings, controllers[0]["ami_id"], lambda ami: self.image_tags(settings, ami))
            # Its workers are the same machines whoever scales them out, launched as the
            # group's template says (as on EC2), not with this scale's own defaults.
            quota = controllers[0].get("cpu_quota", 0)
            worker = dataclasses.replace(settings, role="worker", cpu_quota=quota)
            port, _ = ensure_moto(cache, settings.region)
            user_data = group_user_data(port, settings.region, group)
            for _ in range(count - len(workers)):
                self.launch(worker, image, user_data, group=group)
        leaving = workers[count:][::-1]
        if leaving:
            port, _ = ensure_moto(cache, settings.region)
            with interrupts_as_exceptions():
                scale_in(
                    moto_client("autoscaling", port, settings.region),
                    group,
                    leaving,
                    on_left=lambda record: destroy_instance(cache, record),
                )
        return group

    def move_address(self, target: Target, instance: InstanceRecord) -> InstanceRecord:
        """The deployment's address (one of DEPLOYMENT_ADDRESSES, allocated at its first launch)
        leaves the instance holding it and reaches `instance`: the local Elastic IP."""
        with locked_state(cache_dir()) as state:
            held = state["addresses"].get(instance.deployment)
            taken = {a["address"] for a in state["addresses"].values()}
            address = held["address"] if held else _free_address(taken)
            holder = state["instances"].get(held["instance_id"]) if held else None
            if holder and holder["instance_id"] != instance.instance_id:
                detach_address(Slot(holder["slot"]), address)
                holder["deployment_address"] = ""
            record = state["instances"][instance.instance_id]
            attach_address(Slot(record["slot"]), address)
            record["deployment_address"] = address
            state["addresses"][instance.deployment] = {
                "address": address,
                "instance_id": instance.instance_id,
            }
        log.info("deployment %s: %s now reaches %s", instance.deployment, address, instance.instance_id)
        return dataclasses.replace(instance, deployment_address=address)

    def remove_instance(self, target: Target, instance: InstanceRecord) -> None:
        require_root()
        cache = cache_dir()
        with interrupts_as_exceptions():
            destroy_instance(cache, _record(cache, instance.instance_id))
            port, _ = ensure_moto(cache, target.region)
            ec2_client(port, target.region).terminate_instances(InstanceIds=[instance.instance_id])

    def instances(self, settings: Target) -> list[InstanceRecord]:
        """The launched instances (build instances are not among them)."""
        with locked_state(cache_dir()) as state:
            records = list(state["instances"].values())
        return [_instance(r, settings.region) for r in records if r.get("owner_pid") is None]

    def teardown(self, settings: Target) -> list[str]:
        return teardown_local()

    def has_image(self, ami_id: str) -> bool:
        """Is there an image behind ami_id on this machine (launchable)?"""
        return ami_id in local_images(cache_dir())

    def image_from_instance(self, settings: Target, instance_id: str, name: str) -> str:
        """CreateImage of a used instance: it powers off and its disk becomes a new AMI.

        The local cloud keeps one disk per instance, so the instance is gone
        afterwards (terminated); launch the AMI to get it back. EC2 copies no tags
        to such an image: the source AMI's airflow-ami:* tags (what it was baked
        with) are put on it, as a user must for `./bake launch --ami` to take it.
        """
        require_root()
        cache = cache_dir()
        with interrupts_as_exceptions():
            record = _record(cache, instance_id)
            port, _ = ensure_moto(cache, settings.region)
            ec2 = ec2_client(port, settings.region)
            shutdown_instance(record)
            ami_id = str(ec2.create_image(InstanceId=instance_id, Name=name)["ImageId"])
            tags = {k: v for k, v in _tags_of(ec2, record["ami_id"]).items() if k.startswith(TAG_PREFIX)}
            if tags:
                ec2.create_tags(Resources=[ami_id], Tags=[{"Key": k, "Value": v} for k, v in tags.items()])
            meta = {
                "name": name,
                "region": settings.region,
                "source_ami": record["ami_id"],
                "built": time.time(),
                "tags": tags,
            }
            capture_image(cache, record, ami_id, meta)
            destroy_instance(cache, record)
            ec2.terminate_instances(InstanceIds=[instance_id])
        return ami_id

    def metadata_service(self, instance_id: str, running: bool) -> None:
        """Take an instance's IMDS down or bring it back (an outage, rehearsed)."""
        require_root()
        cache = cache_dir()
        set_metadata_service(cache, _record(cache, instance_id), running)


def _record(cache: Path, instance_id: str) -> dict[str, Any]:
    with locked_state(cache) as state:
        record = state["instances"].get(instance_id)
    if record is None:
        raise LocalCloudError(f"no local instance {instance_id}: see `./bake instances --cloud local`")
    return dict(record)


def _free_address(taken: set[str]) -> str:
    for host in DEPLOYMENT_ADDRESSES.hosts():
        if str(host) not in taken:
            return str(host)
    raise LocalCloudError(f"every deployment address of {DEPLOYMENT_ADDRESSES} is taken: `./bake teardown`")


def _instance(record: dict[str, Any], region: str) -> InstanceRecord:
    return InstanceRecord(
        cloud="local",
        instance_id=record["instance_id"],
        ami_id=record["ami_id"],
        region=region,
        address=record["ip"],
        ssh_user=record["ssh_user"],
        ssh_key_file=record["ssh_key_file"],
        role=record.get("role") or "standalone",
        cluster=record.get("cluster") or "",
        deployment=record.get("deployment") or "",
        deployment_address=record.get("deployment_address") or "",
        host_keys=tuple(record.get("host_keys") or ()),
    )


@contextlib.contextmanager
def _build_instance(
    settings: BakeSettings, cache: Path, port: int, base: tuple[str, Path], timings: dict[str, float]
) -> Iterator[BuildHost]:
    ec2 = ec2_client(port, settings.region)
    base_ami, base_rootfs = base
    key = new_key_pair(cache, ec2, "build")
    t0 = time.monotonic()
    record = boot(
        cache,
        base_rootfs,
        base_ami,
        key,
        region=settings.region,
        ssh_user=settings.ssh_username,
        moto_port=port,
        owner_pid=os.getpid(),
    )

    def keep_image(result: dict[str, Any]) -> None:
        t0 = time.monotonic()
        shutdown_instance(record)
        meta = {
            "name": _ami_name(ec2, result["ami_id"]),
            "region": settings.region,
            "source_ami": base_ami,
            "built": time.time(),
            "tags": _tags_of(ec2, result["ami_id"]),
        }
        capture_image(cache, record, result["ami_id"], meta)
        timings["capture"] = time.monotonic() - t0

    try:
        wait_for_ssh(record)
        timings["boot_to_ssh"] = time.monotonic() - t0
        target = dataclasses.replace(
            settings,
            ec2_endpoint=endpoint_url(port),
            # The image's own AWS calls (backups to S3, the admin password) go to moto too.
            aws_endpoint_url=settings.aws_endpoint_url or AWS_API_URL,
            ssh_host=record["ip"],
            # Packer's temporary group admits this host only, as on AWS the build host's address.
            ssh_cidrs=settings.ssh_cidrs or (f"{Slot(record['slot']).host_ip}/32",),
            ssh_port=22,
            ssh_keypair_name=key.name,
            ssh_private_key_file=str(key.file),
        )
        yield BuildHost(target, aws_env(settings.region, endpoint_url(port)), keep_image, timings)
    finally:
        destroy_instance(cache, record)
        with contextlib.suppress(Exception):
            ec2.delete_key_pair(KeyName=key.name)


def _tags_of(ec2: Any, ami_id: str) -> dict[str, str]:
    images = ec2.describe_images(ImageIds=[ami_id])["Images"]
    return {t["Key"]: t["Value"] for t in (images[0].get("Tags") or [])} if images else {}


def _ami_name(ec2: Any, ami_id: str) -> str:
    with contextlib.suppress(Exception):
        images = ec2.describe_images(ImageIds=[ami_id])["Images"]
        if images:
            return str(images[0].get("Name") or ami_id)
    return ami_id


def remove_worker_groups(cache: Path) -> list[str]:
    """The clusters' groups in moto, each after its scaling policy and lifecycle hook, as
    AWS's teardown removes them."""
    with locked_state(cache) as state:
        groups, moto = state["worker_groups"], state["moto"]
        state["worker_groups"] = {}
    removed: list[str] = []
    for name, region in groups.items() if moto_is_running(moto) else ():
        asg = moto_client("autoscaling", moto["port"], region)
        if not asg.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"]:
            continue
        autoscaling.delete_policy(asg, name, autoscaling.policy_name(name))
        autoscaling.delete_hook(asg, name, contract.LIFECYCLE_HOOK)
        asg.delete_auto_scaling_group(AutoScalingGroupName=name, ForceDelete=True)
        removed += [autoscaling.policy_name(name), f"{name} {contract.LIFECYCLE_HOOK}", name]
    return removed


def teardown_local() -> list[str]:
    """Stop every instance, moto and anything else of ours; returns what was removed."""
    require_root()
    cache = cache_dir()
    with interrupts_as_exceptions():
        removed = remove_worker_groups(cache)
        removed += reap(cache, everything=True)
        stop_moto(cache)
        safe_rmtree(keys_dir(cache))
        with locked_state(cache) as state:
            # Their routes and addresses went with the instances' networks.
            removed += [f"address {a['address']}" for a in state["addresses"].values()]
            state["addresses"] = {}
    return removed


def clean() -> None:
    """teardown_local(), then delete the whole cache: base images, AMI images, logs, state."""
    teardown_local()
    safe_rmtree(cache_dir())
