"""Glue between invoke tasks and the pipeline: settings flags, errors -> exit codes."""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from invoke import Context, Exit, task

from . import build, packer
from .manifest import ManifestError
from .render import render
from .settings import FIELDS, Settings, SettingsError, load_settings

__all__ = ["Settings", "build_ami", "config_defaults", "render_build", "settings_task", "validate"]

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
    except (packer.PackerError, build.CheckError, ManifestError) as exc:
        raise Exit(f"bake: {exc}", code=EXIT_FAILED) from None
    except KeyboardInterrupt:
        raise Exit("bake: interrupted; what the build created was removed", code=EXIT_INTERRUPTED) from None


def config_defaults() -> dict[str, None]:
    """Every field declared (as unset) so invoke maps INVOKE_AMI_<FIELD> env vars onto it."""
    return {f.name: None for f in FIELDS}


def settings_task(body: Callable[..., Any]) -> Any:
    """An invoke task whose flags are the settings fields, resolved and validated first.

    The body is called as body(c, settings, **its own flags).
    """
    own = list(inspect.signature(body).parameters.values())
    own_params = own[2:]
    field_params = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=None) for f in FIELDS]

    @functools.wraps(body)
    def wrapper(c: Context, **flags: Any) -> Any:
        own_values = {p.name: flags.pop(p.name, p.default) for p in own_params}
        with exit_codes():
            settings = load_settings(config=c.config.get("ami", {}), cli=flags)
            return body(c, settings, **own_values)

    wrapper.__signature__ = inspect.Signature([own[0], *own_params, *field_params])  # type: ignore[attr-defined]
    help_text = {f.name.replace("_", "-"): f"{f.help}; {f.allowed}" for f in FIELDS}
    return task(wrapper, help=help_text, auto_shortflags=False)


def render_build(settings: Settings) -> str:
    with exit_codes():
        return str(render(settings, packer.version()))


def validate() -> None:
    with exit_codes():
        build.validate_templates()
        build.check_code()


def build_ami(settings: Settings) -> dict[str, Any]:
    with exit_codes():
        record = build.build_ami(settings)
    sys.stdout.write(f"build-ami: {record['ami_id']} in {record['region']} ({record['name']})\n")
    return record
