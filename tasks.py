"""Invoke tasks (run through ./bake). Thin: the logic lives in airflow_ami/.

A task's settings flags are the fields of the declarations it uses
(airflow_ami/settings: Target, BakeSettings, LaunchSettings), and only those:
`./bake TASK --help` lists them, and a flag of another is refused (exit 2). The
same names work in invoke.yaml under `ami:` and as INVOKE_AMI_<FIELD>
environment variables, for every task that uses them. See README.md.
"""

from __future__ import annotations

import shlex
import sys

from invoke import Collection, Context, task

from airflow_ami import cli
from airflow_ami.cli import BakeSettings, LaunchSettings, Target


@cli.settings_task(BakeSettings)
def render(c: Context, settings: BakeSettings) -> None:
    """Render the Packer template and bundle into build/<build-name>/ and print its path."""
    print(cli.render_build(settings))


@task
def validate(c: Context) -> None:
    """packer fmt + validate every OS profile and arch; scripts/ Python 3.7 + stdlib check; ruff."""
    cli.validate()


@cli.settings_task(BakeSettings)
def build_ami(c: Context, settings: BakeSettings) -> None:
    """Render, validate and packer-build the AMI (--cloud local: in the local cloud); write ami.json."""
    cli.build_ami(settings)


@cli.settings_task(LaunchSettings)
def launch(c: Context, settings: LaunchSettings, ami: str = "") -> None:
    """Launch the AMI (default: the last build's), or a cluster with --workers N; wait for Airflow."""
    cli.launch(settings, ami)


@cli.settings_task(LaunchSettings, flags=cli.UPGRADE_FLAGS)
def upgrade(c: Context, settings: LaunchSettings, ami: str = "", drain_seconds: float = 600.0) -> None:
    """Replace a named deployment's instance by --ami (default: the last build's); nothing is lost."""
    cli.upgrade(settings, ami, drain_seconds)


@cli.settings_task(Target)
def rotate_fernet_key(c: Context, settings: Target) -> None:
    """A named deployment's new fernet key on every node, every value re-encrypted, the old key dropped."""
    cli.rotate_fernet_key(settings)


@cli.settings_task(LaunchSettings, flags=("deployment", "backup_s3_uri"))
def forget_deployment(c: Context, settings: LaunchSettings, yes: bool = False) -> None:
    """List a deployment's secrets and backups (--backup-s3-uri); --yes deletes them. Teardown never does."""
    cli.forget_deployment(settings, yes)


@cli.settings_task(Target)
def ssh(c: Context, settings: Target) -> None:
    """Open a shell on the launched instance (a cluster's controller); a command after -- runs instead."""
    cli.ssh(settings, shlex.split(c.remainder))


@cli.settings_task(Target)
def status(c: Context, settings: Target, json: bool = False) -> None:
    """The launched instances and Airflow's health (--json for machines); exit 1 if not all well."""
    cli.status(settings, json)


@cli.settings_task(LaunchSettings, flags=("cluster", "workers"))
def scale(c: Context, settings: LaunchSettings) -> None:
    """Set the launched cluster's workers to --workers N (AWS: its Auto Scaling group)."""
    cli.scale(settings)


@cli.settings_task(Target)
def instances(c: Context, settings: Target) -> None:
    """List the instances launch started on --cloud (id, address, AMI)."""
    cli.instances(settings)


@cli.settings_task(BakeSettings, flags=("ami_name_prefix", "ami_regions"))
def prune_amis(
    c: Context, settings: BakeSettings, keep: int = 3, yes: bool = False, include_shared: bool = False
) -> None:
    """Per region, list unused AMIs of this prefix/OS/arch past the newest --keep verified ones;
    --yes deregisters them (--include-shared: those shared with other accounts too)."""
    cli.prune_amis(settings, keep, yes, include_shared)


@cli.settings_task(BakeSettings, flags=("kms_key_id",))
def copy_ami(c: Context, settings: BakeSettings, to_regions: str = "", ami: str = "") -> None:
    """Copy the AMI (default: the last build's) with its tags to --to-regions; --kms-key-id re-encrypts."""
    cli.copy_ami(settings, to_regions, ami)


@cli.settings_task(BakeSettings, flags=())
def share_ami(c: Context, settings: BakeSettings, accounts: str = "", ami: str = "") -> None:
    """Let --accounts launch every copy of the AMI (default: the last build's) and use its snapshots."""
    cli.share_ami(settings, accounts, ami)


@cli.settings_task(LaunchSettings, flags=("cluster",))
def verify(c: Context, settings: LaunchSettings, host: str = "") -> None:
    """Run the testinfra suite on --host (ssh://user@addr) or the launched instance; pytest args after --."""
    cli.verify(settings, host, shlex.split(c.remainder))


@cli.settings_task(Target)
def teardown(c: Context, settings: Target) -> None:
    """Remove what launch made (AWS: exactly what its record lists; --cloud local: the whole local cloud)."""
    cli.teardown(settings)


@cli.settings_task(BakeSettings, LaunchSettings, cloud="local")
def rehearse(c: Context, settings: BakeSettings, launching: LaunchSettings, ami: str = "") -> None:
    """The main job: build-ami, launch, verify, teardown in the local cloud; prints phase durations
    (--ami ID: rehearse that AMI, no bake)."""
    cli.rehearse(settings, launching, shlex.split(c.remainder), ami)


@cli.settings_task(BakeSettings, LaunchSettings, flags=cli.names_of(BakeSettings), cloud="local")
def bench(
    c: Context,
    settings: BakeSettings,
    launching: LaunchSettings,
    quick: bool = False,
    on_launched: bool = False,
) -> None:
    """Measure bake, boot, parallelism, throughput, size and memory in the local cloud, each beside a
    baseline of the same run; print the table, write build/bench.json (--quick: smaller N;
    --on-launched: only the instance `launch` recorded, no bake, cluster or teardown)."""
    cli.bench_run(settings, launching, quick, on_launched)


@task
def policies(c: Context) -> None:
    """Print the least IAM policy of the controller's and the workers' instance profiles."""
    cli.policies()


@task
def clean(c: Context) -> None:
    """Stop the local cloud and delete its cached images and build/."""
    cli.clean()


@task
def test(c: Context) -> None:
    """Run the test suite (unit, packer-against-moto, local-cloud e2e); pytest args after --."""
    c.run(shlex.join([sys.executable, "-m", "pytest", *shlex.split(c.remainder)]), pty=False)


ns = Collection(
    render,
    validate,
    build_ami,
    launch,
    upgrade,
    rotate_fernet_key,
    forget_deployment,
    ssh,
    status,
    scale,
    instances,
    verify,
    teardown,
    prune_amis,
    copy_ami,
    share_ami,
    rehearse,
    bench,
    policies,
    clean,
    test,
)
ns.configure({"ami": cli.config_defaults()})
