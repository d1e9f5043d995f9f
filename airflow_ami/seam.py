"""The host/instance seam: the instance's own declarations, loaded for the host.

Two modules of the instance's code (scripts/provisioning/shared/) say what both
sides rely on, and the host imports those very files instead of restating them:

- ``layout``: the image's paths, units and ports;
- ``contract``: what the host tells the instance (every key of settings.json,
  the OS facts, the user-data document and its limits).

They are standard library only, like all of scripts/; the host puts scripts/ on
its import path for them (after its own packages, so nothing of the host is
shadowed).
"""

from __future__ import annotations

import sys
from pathlib import Path

SCRIPTS_DIR = Path(__file__).resolve().parent.parent / "scripts"
SHARED_DIR = SCRIPTS_DIR / "provisioning" / "shared"
if str(SCRIPTS_DIR) not in sys.path:
    sys.path.append(str(SCRIPTS_DIR))

from provisioning.shared import contract, layout  # noqa: E402

__all__ = ["SCRIPTS_DIR", "SHARED_DIR", "contract", "layout"]
