"""Invoke tasks (run through ./bake). Thin: the logic lives in airflow_ami/.

Every settings field is a flag on the tasks that take settings (`--region`,
`--os`, ...); the same names work in invoke.yaml under `ami:` and as
INVOKE_AMI_<FIELD> environment variables. See README.md.
"""

from __future__ import annotations

import shlex
import sys

from invoke import Collection, Context, task

from airflow_ami import cli


@cli.settings_task
def render(c: Context, settings: cli.Settings) -> None:
    """Render the Packer template and bundle into build/<build-name>/ and print its path."""
    print(cli.render_build(settings))


@task
def validate(c: Context) -> None:
    """packer fmt + validate every OS profile and arch; scripts/ Python 3.7 + stdlib check; ruff."""
    cli.validate()


@cli.settings_task
def build_ami(c: Context, settings: cli.Settings) -> None:
    """Render, validate and packer-build the AMI (--cloud local: in the local cloud); write ami.json."""
    cli.build_ami(settings)


@cli.settings_task
def launch(c: Context, settings: cli.Settings, ami: str = "") -> None:
    """Launch an instance of the AMI (default: the last build's) and wait for SSH."""
    cli.launch(settings, ami)


@cli.settings_task
def instances(c: Context, settings: cli.Settings) -> None:
    """List the instances launch started on --cloud (id, address, AMI)."""
    cli.instances(settings)


@cli.settings_task
def prune_amis(c: Context, settings: cli.Settings, keep: int = 3, yes: bool = False) -> None:
    """List (with --yes: deregister) all but the newest --keep AMIs of this prefix, OS and arch."""
    cli.prune_amis(settings, keep, yes)


@cli.settings_task
def verify(c: Context, settings: cli.Settings, host: str = "") -> None:
    """Run the testinfra suite on --host (ssh://user@addr) or the launched instance; pytest args after --."""
    cli.verify(settings, host, shlex.split(c.remainder))


@cli.settings_task
def teardown(c: Context, settings: cli.Settings) -> None:
    """Terminate what launch started (--cloud local: stop the whole local cloud)."""
    cli.teardown(settings)


@cli.settings_task(cloud="local")
def rehearse(c: Context, settings: cli.Settings) -> None:
    """The main job: build-ami, launch, verify, teardown in the local cloud; prints phase durations."""
    cli.rehearse(settings, shlex.split(c.remainder))


@task
def clean(c: Context) -> None:
    """Stop the local cloud and delete its cached images and build/."""
    cli.clean()


@task
def test(c: Context) -> None:
    """Run the test suite (unit, packer-against-moto, local-cloud e2e); pytest args after --."""
    c.run(shlex.join([sys.executable, "-m", "pytest", *shlex.split(c.remainder)]), pty=False)


ns = Collection(
    render, validate, build_ami, launch, instances, verify, teardown, prune_amis, rehearse, clean, test
)
ns.configure({"ami": cli.config_defaults()})
