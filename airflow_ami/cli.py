"""Glue between invoke tasks and the pipeline: settings flags, errors -> exit codes."""

from __future__ import annotations

import datetime
import functools
import inspect
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import botocore.exceptions
from invoke import Context, Exit, task

from . import build, codecheck, ec2, lifecycle, localcloud, packer
from .builddir import BUILD_ROOT, MissingRecord
from .localcloud import LocalCloudError
from .manifest import ManifestError
from .render import render
from .settings import FIELDS, Field, Settings, SettingsError, load_settings

__all__ = [
    "Settings",
    "build_ami",
    "clean",
    "config_defaults",
    "instances",
    "launch",
    "prune_amis",
    "rehearse",
    "render_build",
    "settings_task",
    "teardown",
    "validate",
    "verify",
]

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


@contextmanager
def exit_codes() -> Iterator[None]:
    """Bad input -> one line, status 2; a failed step -> status 1; Ctrl-C -> 130."""
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
        botocore.exceptions.BotoCoreError,
        botocore.exceptions.ClientError,
    ) as exc:
        raise Exit(f"bake: {exc}", code=EXIT_FAILED) from None
    except KeyboardInterrupt:
        raise Exit(
            "bake: interrupted; what this run started was stopped and removed", code=EXIT_INTERRUPTED
        ) from None


def config_defaults() -> dict[str, None]:
    """Every field declared (as unset) so invoke maps INVOKE_AMI_<FIELD> env vars onto it."""
    return {f.name: None for f in FIELDS}


def settings_task(body: Callable[..., Any] | None = None, **fixed: str) -> Any:
    """An invoke task whose flags are the settings fields, resolved and validated first.

    The body is called as body(c, settings, **its own flags). Settings in
    `fixed` (e.g. cloud="local") are not flags of that task.
    """
    if body is None:
        return functools.partial(settings_task, **fixed)
    own = list(inspect.signature(body).parameters.values())
    own_params = own[2:]
    fields = [f for f in FIELDS if f.name not in fixed]
    field_params = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=None) for f in fields]

    @functools.wraps(body)
    def wrapper(c: Context, **flags: Any) -> Any:
        own_values = {p.name: flags.pop(p.name, p.default) for p in own_params}
        with exit_codes():
            settings = load_settings(config=c.config.get("ami", {}), cli={**flags, **fixed})
            return body(c, settings, **own_values)

    wrapper.__signature__ = inspect.Signature([own[0], *own_params, *field_params])  # type: ignore[attr-defined]
    help_text = {f.name.replace("_", "-"): f"{f.help}; {f.allowed}{_default(f)}" for f in fields}
    return task(wrapper, help=help_text, auto_shortflags=False)


def _default(f: Field) -> str:
    """The declared default as the flag would take it (per-arch and profile defaults named as such)."""
    if f.default is None:
        return " (default: the OS profile's)"
    if isinstance(f.default, dict) and f.by_arch:
        return " (default: per arch)"
    if isinstance(f.default, (tuple, dict)):
        return "" if not f.default else f" (default: {','.join(f.default)})"
    return f" (default: {str(f.default).lower() if isinstance(f.default, bool) else f.default or 'empty'})"


def warn_end_of_support(settings: Settings) -> None:
    if settings.end_of_support:
        line = settings.end_of_support.warning(settings.os, datetime.date.today())
        if line:
            sys.stderr.write(f"bake: {line}\n")


def render_build(settings: Settings) -> str:
    warn_end_of_support(settings)
    with exit_codes():
        return str(render(settings, packer.version()))


def validate() -> None:
    with exit_codes():
        build.validate_templates()
        codecheck.check_code()


def build_ami(settings: Settings) -> None:
    warn_end_of_support(settings)
    with exit_codes():
        record = lifecycle.bake(settings)
    sys.stdout.write(f"build-ami: {record['ami_id']} in {record['region']} ({record['name']})\n")


def launch(settings: Settings, ami: str) -> None:
    with exit_codes():
        instance = lifecycle.launch(settings, ami)
    sys.stdout.write(
        f"launch: {instance.instance_id} at {instance.address} (ssh {instance.ssh_user}@{instance.address})\n"
    )


def instances(settings: Settings) -> None:
    with exit_codes():
        found = lifecycle.instances(settings)
    for instance in found:
        sys.stdout.write(f"{instance.instance_id} {instance.address} {instance.ami_id}\n")
    if not found:
        sys.stdout.write(f"instances: none launched on {settings.cloud} in {settings.region}\n")


def verify(settings: Settings, host: str, pytest_args: list[str]) -> None:
    with exit_codes():
        code = lifecycle.verify_instance(settings, host, pytest_args)
    if code != 0:
        raise Exit("verify: the instance failed the testinfra suite (see above)", code=EXIT_FAILED)


def teardown(settings: Settings) -> None:
    with exit_codes():
        removed = lifecycle.teardown(settings)
    sys.stdout.write(f"teardown: removed {', '.join(removed) or 'nothing (none running)'}\n")


def prune_amis(settings: Settings, keep: int, yes: bool) -> None:
    with exit_codes():
        if keep < 0:
            raise SettingsError("keep", "a whole number >= 0", keep)
        pruned = ec2.prune(settings, keep, apply=yes)
    verb = "deregistered" if yes else "would deregister (dry run; --yes to act)"
    sys.stdout.write(f"prune-amis: {verb}: {', '.join(pruned) or 'nothing'}\n")


def rehearse(settings: Settings, pytest_args: list[str]) -> None:
    with exit_codes():
        code = lifecycle.rehearse(settings, pytest_args)
    if code != 0:
        raise Exit("rehearse: the launched instance failed verification (see above)", code=EXIT_FAILED)


def clean() -> None:
    with exit_codes():
        localcloud.clean()
    shutil.rmtree(BUILD_ROOT, ignore_errors=True)
