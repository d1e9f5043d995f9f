"""The local cloud: rehearse build-ami -> launch -> verify on one machine, no AWS account.

moto_server is the EC2 API, systemd-nspawn containers in network namespaces
are the instances, a Debian unstable rootfs built with mmdebstrap is the base
image. See docs/architecture.md ("Local cloud"). All of it needs root.

Flow, each step may be a separate process (state: <cache>/state.json, cache
dir /var/cache/airflow-ami or $AIRFLOW_AMI_CACHE_DIR):

    record = build_ami_local(settings)       # moto stays up afterwards
    host = launch_local(record["ami_id"])    # instance stays up afterwards
    ... ssh host["ssh_user"]@host["address"] -i host["ssh_key_file"] ...
    teardown_local()                         # instances, moto, netns, nft, sysctl
    leftovers()                              # all lists empty after teardown
    clean()                                  # teardown + delete cached images
"""

from .cloud import (
    build_ami_local,
    clean,
    ensure_moto,
    instances,
    interrupts_as_exceptions,
    launch_local,
    leftovers,
    stop_moto,
    teardown_local,
)
from .instance import ssh_command, wait_for_ssh
from .reaper import reap
from .system import LocalCloudError, cache_dir, missing_tools, require_root, require_tools

__all__ = [
    "LocalCloudError",
    "build_ami_local",
    "cache_dir",
    "clean",
    "ensure_moto",
    "instances",
    "interrupts_as_exceptions",
    "launch_local",
    "leftovers",
    "missing_tools",
    "reap",
    "require_root",
    "require_tools",
    "ssh_command",
    "stop_moto",
    "teardown_local",
    "wait_for_ssh",
]
