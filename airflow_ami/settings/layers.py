"""Load a settings declaration from its layers, each value parsed and checked first.

Layers, lowest first: the declared defaults < ``profiles/<os>.yaml`` <
``clouds/<cloud>.yaml`` < invoke config (``invoke.yaml`` key ``ami``, env
``INVOKE_AMI_<FIELD>``) < the task's flags. The files and the invoke config
serve every declaration: a key any declaration knows is taken by those that
declare it. A layer may give a value as a mapping by architecture
(``{x86_64: ..., arm64: ...}``) for the fields declared ``by_arch``. The first
bad value raises :class:`SettingsError` naming the field and the allowed form.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from airflow_ami.seam import contract
from airflow_ami.settings.fields import (
    ARCHES,
    CLOUDS_DIR,
    PROFILES_DIR,
    Field,
    SettingsError,
    all_fields,
    fields_of,
    shown,
)
from airflow_ami.settings.target import EndOfSupport

T = TypeVar("T")


def load_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise SettingsError(path.name, "a YAML mapping of setting: value")
    return data


def profile_layer(os_name: str, arch: str) -> tuple[dict[str, Any], contract.OsFacts, EndOfSupport | None]:
    """An OS profile's settings for `arch`, its facts and its end of support."""
    profile = load_yaml(PROFILES_DIR / f"{os_name}.yaml")
    arch_name = profile.pop("arch_names")[arch]
    facts = profile.pop("os_facts")
    support = profile.pop("end_of_support", None)
    profile["source_ami_name"] = profile["source_ami_name"].replace("{arch}", arch_name)
    if set(facts) != set(contract.OS_FACTS):
        raise SettingsError(f"{os_name} os_facts", f"a mapping of exactly {', '.join(contract.OS_FACTS)}")
    return profile, contract.OsFacts(**facts), EndOfSupport(**support) if support else None


def systemd_of(os_name: str, arch: str) -> int:
    return int(profile_layer(os_name, arch)[1].systemd_version)


def load(
    cls: type[T],
    config: Mapping[str, Any] | None = None,
    cli: Mapping[str, Any] | None = None,
    used: Collection[str] | None = None,
) -> T:
    """Resolve and validate declaration `cls` from every layer.

    ``config`` is the invoke config's ``ami`` mapping (invoke.yaml / env),
    ``cli`` the task's flags; unset values are None. ``used``: the only fields
    (besides the target's) a task reads, the only ones checked; the checks of
    the others are about what those tasks do (a cluster launch needs instance
    profiles, scaling its workers does not).
    """
    own = {f.name: f for f in fields_of(cls)}
    known = all_fields()
    for name in config or {}:
        if name not in known:
            raise SettingsError(name, f"one of the known settings ({', '.join(known)})")
    for name in cli or {}:
        if name not in own:
            raise SettingsError(name, f"one of this task's settings ({', '.join(own)})")
    user = [_mine(config, own), _mine(cli, own)]
    defaults = {name: f.default for name, f in own.items()}
    values: dict[str, Any] = {}
    # cloud, os and arch choose the overlay and profile layers, so they resolve first.
    values["cloud"] = _resolve(own["cloud"], [defaults, *user], values, None)
    overlay = _known(load_yaml(CLOUDS_DIR / f"{values['cloud']}.yaml"), known)
    for name in ("os", "arch"):
        values[name] = _resolve(own[name], [defaults, overlay, *user], values, None)
    profile, facts, support = profile_layer(values["os"], values["arch"])
    layers = [defaults, _mine(profile, own), _mine(overlay, own), *user]
    rest = [name for name in own if name not in values]
    values.update({name: _parse(own[name], _pick(own[name], layers, values["arch"])) for name in rest})
    if not values["build_name"]:
        suffix = "" if values["cloud"] == "aws" else f"-{values['cloud']}"
        values["build_name"] = f"{values['os']}-{values['arch']}{suffix}"
    complete = getattr(cls, "complete", None)
    if complete:
        values.update(complete(values))
    for name in rest:
        if used is None or name in used:
            _validate(own[name], values[name], values)
    return cls(**values, os_facts=facts, end_of_support=support)


def _known(layer: dict[str, Any], known: Mapping[str, Field]) -> dict[str, Any]:
    for name in layer:
        if name not in known:
            raise SettingsError(name, f"one of the known settings ({', '.join(known)})")
    return layer


def _mine(layer: Mapping[str, Any] | None, own: Mapping[str, Field]) -> dict[str, Any]:
    return {k: v for k, v in (layer or {}).items() if k in own}


def _pick(f: Field, layers: list[Mapping[str, Any]], arch: str | None) -> object:
    """The highest layer's value for the field (None/absent means: not set there)."""
    for layer in reversed(layers):
        value = layer.get(f.name)
        if value is None:
            continue
        if f.by_arch and isinstance(value, Mapping) and arch is not None:
            if set(value) != set(ARCHES):
                allowed = f"a value, or a mapping with exactly the keys {', '.join(ARCHES)}"
                raise SettingsError(f.name, allowed)
            return value[arch]
        return value
    return None


def _parse(f: Field, raw: object) -> Any:
    try:
        return f.parse(raw)
    except (ValueError, TypeError):
        raise SettingsError(f.name, f.allowed, shown(raw)) from None


def _validate(f: Field, value: Any, values: Mapping[str, Any]) -> None:
    try:
        f.check(value, values)
    except (ValueError, TypeError, KeyError):
        raise SettingsError(f.name, f.allowed, shown(value)) from None


def _resolve(f: Field, layers: list[Mapping[str, Any]], values: Mapping[str, Any], arch: str | None) -> Any:
    value = _parse(f, _pick(f, layers, arch))
    _validate(f, value, values)
    return value
