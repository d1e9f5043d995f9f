"""Code checks: what runs on the instance (scripts/, and the driver's probe uploaded there) is
Python 3.7 with the standard library only; all Python is ruff-clean."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import TextIO

from airflow_ami.driver.instance import PROBE_SRC
from airflow_ami.seam import SCRIPTS_DIR
from airflow_ami.settings import REPO_ROOT

# Run by the instance's own python3: scripts/, and the probe next to its shared modules.
ON_THE_INSTANCE = (SCRIPTS_DIR, PROBE_SRC)

# Amazon Linux 2's python3 is 3.7: scripts/ must not need anything newer.
VERMIN_ARGS = ("-t=3.7-", "--no-tips", "--violations", "--eval-annotations")


class CheckError(RuntimeError):
    """A code check (vermin, ruff, stdlib-only imports) failed."""


def check_code(out: TextIO = sys.stdout) -> None:
    bin_dir = Path(sys.executable).parent
    checks = [
        [str(bin_dir / "vermin"), *VERMIN_ARGS, *(str(p.relative_to(REPO_ROOT)) for p in ON_THE_INSTANCE)],
        [str(bin_dir / "ruff"), "check", "--quiet", "."],
    ]
    for command in checks:
        result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise CheckError(f"{' '.join(command[:2])} failed:\n{result.stdout}{result.stderr}")
        out.write(f"validate: {Path(command[0]).name} ok\n")
    violations = non_stdlib_imports(SCRIPTS_DIR, PROBE_SRC)
    if violations:
        raise CheckError("instance-side code must use the standard library only:\n" + "\n".join(violations))
    out.write("validate: scripts/ and the probe import only the standard library\n")


def non_stdlib_imports(root: Path, *more: Path) -> list[str]:
    """file:line: module for every import in root (and the files `more`) that is neither
    stdlib nor a module under root."""
    local = {p.stem for p in root.rglob("*.py")} | {p.name for p in root.rglob("*") if p.is_dir()}
    allowed = set(sys.stdlib_module_names) | local | {"__future__"}
    found = []
    for path in [*sorted(root.rglob("*.py")), *more]:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                if name.split(".")[0] not in allowed:
                    shown = path.relative_to(root.parent) if path.is_relative_to(root.parent) else path
                    found.append(f"{shown}:{node.lineno}: {name}")
    return found
