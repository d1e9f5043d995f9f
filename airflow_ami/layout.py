"""The instance's layout (paths, Airflow units), read from its one declaration.

That declaration is scripts/provisioning/layout.py, which provisioning uses on
the instance; the host loads the same file for rendering templates.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

# No import of the rest of the package: the testinfra suite loads this module alone.
SCRIPTS_DIR = Path(__file__).resolve().parent.parent / "scripts"
LAYOUT_FILE = SCRIPTS_DIR / "provisioning" / "layout.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("airflow_ami_instance_layout", LAYOUT_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


layout = _load()
