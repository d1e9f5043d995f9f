"""The settings: three declarations, their layers, strict validation.

- :class:`Target` (target.py): which build, on which cloud and where; every
  cloud-facing task takes these.
- :class:`BakeSettings` (bake.py): what the image is made of and how it is built.
- :class:`LaunchSettings` (launch.py): what a launch decides.

Each task takes, and lists in ``--help``, the fields of the declarations it
uses (airflow_ami/cli.py); a flag of another declaration is refused.
:func:`load` resolves a declaration from its layers (layers.py).
"""

from airflow_ami.settings.bake import BakeSettings
from airflow_ami.settings.fields import (
    ARCHES,
    CLOUDS_DIR,
    IMAGE,
    MANIFEST,
    PROFILES_DIR,
    RECORD,
    REPO_ROOT,
    TAGS,
    Field,
    SettingsError,
    all_fields,
    api_url,
    fields_of,
    os_profiles,
    tag_key,
)
from airflow_ami.settings.launch import DEFAULT_REHEARSAL_CLUSTER, LaunchSettings
from airflow_ami.settings.layers import load
from airflow_ami.settings.target import EndOfSupport, Target

__all__ = [
    "ARCHES",
    "CLOUDS_DIR",
    "DEFAULT_REHEARSAL_CLUSTER",
    "IMAGE",
    "MANIFEST",
    "PROFILES_DIR",
    "RECORD",
    "REPO_ROOT",
    "TAGS",
    "BakeSettings",
    "EndOfSupport",
    "Field",
    "LaunchSettings",
    "SettingsError",
    "Target",
    "all_fields",
    "api_url",
    "fields_of",
    "layers",
    "load",
    "os_profiles",
    "tag_key",
]
