"""Glue between invoke tasks and the pipeline: settings flags, errors -> exit codes."""

from __future__ import annotations

import datetime
import functools
import inspect
import json
import math
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import botocore.exceptions
from invoke import Context, Exit, task

from airflow_ami import bench, codecheck, deployments, health, lifecycle
from airflow_ami import policies as iam_policies
from airflow_ami.builddir import BUILD_ROOT, MissingRecord
from airflow_ami.clouds import autoscaling, local
from airflow_ami.clouds.aws import LaunchError
from airflow_ami.clouds.local import LocalCloudError
from airflow_ami.driver.instance import InstanceError
from airflow_ami.image import amis, build, packer
from airflow_ami.image.manifest import ManifestError
from airflow_ami.image.render import render
from airflow_ami.settings import (
    BakeSettings,
    Field,
    LaunchSettings,
    SettingsError,
    Target,
    all_fields,
    fields_of,
    load,
)
from airflow_ami.upgrade import FLAGS as UPGRADE_FLAGS
from airflow_ami.upgrade import UpgradeFailed

__all__ = [
    "UPGRADE_FLAGS",
    "BakeSettings",
    "LaunchSettings",
    "Target",
    "bench_run",
    "build_ami",
    "clean",
    "config_defaults",
    "copy_ami",
    "instances",
    "launch",
    "names_of",
    "policies",
    "prune_amis",
    "rehearse",
    "render_build",
    "scale",
    "settings_task",
    "share_ami",
    "ssh",
    "status",
    "teardown",
    "upgrade",
    "validate",
    "verify",
]

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


@contextmanager
def exit_codes(interrupted: str = "what this run started was stopped and removed") -> Iterator[None]:
    """Bad input -> one line, status 2; a failed step -> status 1; Ctrl-C -> 130 and
    `interrupted`, what is left of the run."""
    try:
        yield
    except SettingsError as exc:
        raise Exit(f"bake: {exc}", code=EXIT_BAD_INPUT) from None
    except (
        packer.PackerError,
        codecheck.CheckError,
        ManifestError,
        MissingRecord,
        LocalCloudError,
        amis.AmiError,
        LaunchError,
        autoscaling.ScalingError,
        health.Unhealthy,
        UpgradeFailed,
        deployments.DeploymentError,
        bench.BenchError,
        InstanceError,
        botocore.exceptions.BotoCoreError,
        botocore.exceptions.ClientError,
    ) as exc:
        raise Exit(f"bake: {exc}", code=EXIT_FAILED) from None
    except KeyboardInterrupt:
        raise Exit(f"bake: interrupted; {interrupted}", code=EXIT_INTERRUPTED) from None


def config_defaults() -> dict[str, None]:
    """Every field declared (as unset) so invoke maps INVOKE_AMI_<FIELD> env vars onto it."""
    return dict.fromkeys(all_fields())


def settings_task(
    *takes: type, flags: tuple[str, ...] | None = None, **fixed: str
) -> Callable[[Callable[..., Any]], Any]:
    """An invoke task whose flags are the settings it uses, resolved and validated first.

    The body is called as body(c, <one settings object per declaration in `takes`>,
    **its own flags). Its settings flags are the fields of `takes`, or only the
    Target's and `flags` when it uses a few fields of a larger declaration; the other
    fields come from their layers. Settings in `fixed` (e.g. cloud="local") are not flags.
    """

    def decorate(body: Callable[..., Any]) -> Any:
        own = list(inspect.signature(body).parameters.values())
        own_params = own[1 + len(takes) :]
        # A name two declarations share (rehearse's instance_type: the build's and the
        # launch's) is one flag that sets both, its help says both.
        declared: dict[str, list[tuple[type, Field]]] = {}
        for cls in takes:
            for f in fields_of(cls):
                declared.setdefault(f.name, []).append((cls, f))
        wanted = set(declared) if flags is None else {f.name for f in fields_of(Target)} | set(flags)
        settable = [name for name in declared if name in wanted and name not in fixed]
        field_params = [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None) for name in settable
        ]

        @functools.wraps(body)
        def wrapper(c: Context, **given: Any) -> Any:
            own_values = {p.name: given.pop(p.name, p.default) for p in own_params}
            chosen = {**given, **fixed}
            with exit_codes():
                config = c.config.get("ami", {})
                used = None if flags is None else wanted
                loaded = [load(cls, config=config, cli=_of(cls, chosen), used=used) for cls in takes]
                return body(c, *loaded, **own_values)

        wrapper.__signature__ = inspect.Signature([own[0], *own_params, *field_params])  # type: ignore[attr-defined]
        help_text = {name.replace("_", "-"): _help(declared[name]) for name in settable}
        return task(wrapper, help=help_text, auto_shortflags=False)

    return decorate


def names_of(cls: type) -> tuple[str, ...]:
    """The field names of a declaration (a task's `flags`: all of one declaration it takes)."""
    return tuple(f.name for f in fields_of(cls))


def _of(cls: type, chosen: dict[str, Any]) -> dict[str, Any]:
    """The chosen values the declaration `cls` has fields for."""
    return {name: value for name, value in chosen.items() if name in names_of(cls)}


# What a declaration's settings are called in a line to the user.
WHOSE = {BakeSettings: "bake", LaunchSettings: "launch"}


def _help(declared: list[tuple[type, Field]]) -> str:
    """A flag's help: its field's, or each declaration's it sets, named."""
    said = [f"{f.help}; {f.allowed}{_default(f)}" for _, f in declared]
    if len(said) == 1:
        return said[0]
    return " | ".join(f"{WHOSE[cls]}: {text}" for (cls, _), text in zip(declared, said, strict=True))


def refusal(task_name: str, flag: str) -> str:
    """One line for a flag the task does not take: whose setting it is, where to look."""
    name = flag.lstrip("-").replace("-", "_")
    owners = [word for cls, word in WHOSE.items() if name in names_of(cls)]
    whose = f" (a {' and '.join(owners)} setting, which {task_name} does not use)" if owners else ""
    return f"bake: {task_name} takes no {flag}{whose}; `./bake {task_name} --help` lists what it takes"


def _default(f: Field) -> str:
    """The declared default as the flag would take it (per-arch and profile defaults named as such)."""
    if f.default is None:
        return " (default: the OS profile's)"
    if isinstance(f.default, dict) and f.by_arch:
        return " (default: per arch)"
    if isinstance(f.default, (tuple, dict)):
        return "" if not f.default else f" (default: {','.join(f.default)})"
    return f" (default: {str(f.default).lower() if isinstance(f.default, bool) else f.default or 'empty'})"


def warn_end_of_support(settings: BakeSettings) -> None:
    if settings.end_of_support:
        line = settings.end_of_support.warning(settings.os, datetime.date.today())
        if line:
            sys.stderr.write(f"bake: {line}\n")


def render_build(settings: BakeSettings) -> str:
    warn_end_of_support(settings)
    with exit_codes():
        return str(render(settings, packer.version()))


def validate() -> None:
    with exit_codes():
        build.validate_templates()
        codecheck.check_code()


def build_ami(settings: BakeSettings) -> None:
    warn_end_of_support(settings)
    with exit_codes():
        record = lifecycle.build_image(settings)
    sys.stdout.write(f"build-ami: {record['ami_id']} in {record['region']} ({record['name']})\n")


def launch(settings: LaunchSettings, ami: str) -> None:
    # A launch is kept as far as it got (its record names all it made), not undone.
    cloud = "" if settings.cloud == "aws" else f" --cloud {settings.cloud}"
    with exit_codes(f"what the launch made so far is recorded: `./bake teardown{cloud}` removes it"):
        members = lifecycle.launch(settings, ami)
        for member in members:
            sys.stdout.write(
                f"launch: {member.role} {member.instance_id} at {member.address or '(no address)'}\n"
            )
        sys.stdout.write("".join(f"launch: {line}\n" for line in lifecycle.ready(settings, members[0])))


def upgrade(settings: LaunchSettings, ami: str, drain_seconds: float) -> None:
    with exit_codes():
        # nan and inf are floats too, and would make the drain endless.
        if not 0 <= drain_seconds < math.inf:
            raise SettingsError("drain_seconds", "a number of seconds >= 0", drain_seconds)
        lifecycle.upgrade(settings, ami, drain_seconds=drain_seconds)


def rotate_fernet_key(settings: Target) -> None:
    with exit_codes():
        rotated = deployments.rotate_fernet_key(settings)
    sys.stdout.write(f"rotate-fernet-key: a new fernet key on {', '.join(rotated)}; the old one dropped\n")


def forget_deployment(settings: LaunchSettings, yes: bool) -> None:
    with exit_codes():
        found = deployments.forget(settings, apply=yes)
    verb = "deleted" if yes else "would delete (--yes to act)"
    for item in found:
        sys.stdout.write(f"forget-deployment: {verb} {item}\n")
    if not found:
        sys.stdout.write(f"forget-deployment: nothing of deployment {settings.deployment} found\n")


def ssh(settings: Target, command: list[str]) -> None:
    with exit_codes():
        argv = lifecycle.ssh_argv(settings, command)
    code = subprocess.run(argv, check=False).returncode
    if code != 0:
        raise Exit(code=code)


def status(settings: Target, as_json: bool) -> None:
    with exit_codes():
        report = lifecycle.status(settings)
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2, sort_keys=True) + "\n")
    else:
        sys.stdout.write(lifecycle.status_text(report))
    if not report["ok"]:
        raise Exit(code=EXIT_FAILED)


def scale(settings: LaunchSettings) -> None:
    with exit_codes():
        scaled = lifecycle.cloud_for(settings).scale(settings, settings.workers)
    sys.stdout.write(f"scale: {scaled} set to {settings.workers} workers\n")


def instances(settings: Target) -> None:
    with exit_codes():
        found = lifecycle.instances(settings)
    for instance in found:
        sys.stdout.write(f"{instance.instance_id} {instance.address} {instance.ami_id}\n")
    if not found:
        sys.stdout.write(f"instances: none launched on {settings.cloud} in {settings.region}\n")


def verify(settings: LaunchSettings, host: str, pytest_args: list[str]) -> None:
    with exit_codes():
        code = lifecycle.verify_instance(settings, settings.cluster, host, pytest_args)
    if code != 0:
        raise Exit("verify: the instance failed the testinfra suite (see above)", code=EXIT_FAILED)


def teardown(settings: Target) -> None:
    with exit_codes():
        removed = lifecycle.teardown(settings)
    sys.stdout.write(f"teardown: removed {', '.join(removed) or 'nothing (none running)'}\n")


def policies() -> None:
    sys.stdout.write(iam_policies.render())


def prune_amis(settings: BakeSettings, keep: int, yes: bool, include_shared: bool) -> None:
    with exit_codes():
        regions = amis.prune(settings, keep, apply=yes, shared=include_shared)
    verb = "deregistered with their snapshots" if yes else "would deregister (dry run; --yes to act)"
    for pruned in regions:
        where = f"prune-amis: {pruned.region}:"
        sys.stdout.write(f"{where} {verb}: {', '.join(pruned.removed) or 'nothing'}\n")
        for ami_id, users in pruned.in_use.items():
            sys.stdout.write(f"{where} kept {ami_id}, in use by {', '.join(users)}\n")
        kept = ", ".join(pruned.kept) or "none found"
        sys.stdout.write(f"{where} kept the newest {keep} verified and any newer: {kept}\n")


def copy_ami(settings: BakeSettings, to_regions: str, ami: str) -> None:
    with exit_codes():
        copies = amis.copy(settings, to_regions, ami)
    for region, copy_id in copies.items():
        sys.stdout.write(f"copy-ami: {copy_id} in {region} (available, tags copied)\n")


def share_ami(settings: BakeSettings, accounts: str, ami: str) -> None:
    with exit_codes():
        shared = amis.share(settings, accounts, ami)
    users = ", ".join(shared.accounts)
    for region, ami_id in sorted(shared.amis.items()):
        sys.stdout.write(f"share-ami: {ami_id} in {region} and its snapshots shared with {users}\n")
    for key in shared.customer_keys:
        sys.stdout.write(
            f"share-ami: {key} encrypts its snapshots: its key policy must let {users} use it"
            f" ({amis.KEY_ACTIONS}), or create grants for them; until then they cannot launch it\n"
        )


def rehearse(settings: BakeSettings, launching: LaunchSettings, pytest_args: list[str], ami: str) -> None:
    with exit_codes():
        code = lifecycle.rehearse(settings, launching, pytest_args, ami_id=ami)
    if code != 0:
        raise Exit("rehearse: the launched instance failed verification (see above)", code=EXIT_FAILED)


def bench_run(settings: BakeSettings, launching: LaunchSettings, quick: bool, on_launched: bool) -> None:
    with exit_codes():
        bench.bench(settings, launching, quick=quick, on_launched=on_launched)


def clean() -> None:
    with exit_codes():
        local.clean()
    shutil.rmtree(BUILD_ROOT, ignore_errors=True)
