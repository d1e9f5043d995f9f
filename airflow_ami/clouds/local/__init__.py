"""The local cloud: rehearse build-ami -> launch -> verify on one machine, no AWS account.

moto_server is the EC2 API, systemd-nspawn containers in network namespaces
are the instances, a Debian unstable rootfs built with mmdebstrap is the base
image. See docs/architecture.md ("Local cloud"). All of it needs root.

`LocalCloud` is the `Cloud` (airflow_ami/clouds/__init__.py) the pipeline uses; each
step may be a separate process (state: <cache>/state.json, cache dir
/var/cache/airflow-ami or $AIRFLOW_AMI_CACHE_DIR):

    with cloud.build_host(settings) as host:  # moto stays up afterwards
        ... packer build with host.settings / host.env, then host.keep_image(record)
    instance = cloud.launch(settings, ami_id)  # stays up afterwards
    ... ssh instance.ssh_user@instance.address -i instance.ssh_key_file ...
    cloud.teardown(settings)                   # instances, moto, netns, nft, sysctl
    clean()                                    # teardown + delete cached images
"""

from airflow_ami.clouds.local.cloud import LocalCloud, clean
from airflow_ami.clouds.local.system import LocalCloudError

__all__ = ["LocalCloud", "LocalCloudError", "clean"]
