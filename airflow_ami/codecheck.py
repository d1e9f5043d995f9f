"""Code checks: scripts/ runs on Python 3.7 with the standard library only; all Python is ruff-clean."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import TextIO

from .layout import SCRIPTS_DIR
from .settings import REPO_ROOT

# Amazon Linux 2's python3 is 3.7: scripts/ must not need anything newer.
VERMIN_ARGS = ("-t=3.7-", "--no-tips", "--violations", "--eval-annotations")


class CheckError(RuntimeError):
    """A code check (vermin, ruff, stdlib-only imports) failed."""


def check_code(out: TextIO = sys.stdout) -> None:
    bin_dir = Path(sys.executable).parent
    checks = [
        [str(bin_dir / "vermin"), *VERMIN_ARGS, "scripts"],
        [str(bin_dir / "ruff"), "check", "--quiet", "."],
    ]
    for command in checks:
        result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise CheckError(f"{' '.join(command[:2])} failed:\n{result.stdout}{result.stderr}")
        out.write(f"validate: {Path(command[0]).name} ok\n")
    violations = non_stdlib_imports(SCRIPTS_DIR)
    if violations:
        raise CheckError("scripts/ must use the standard library only:\n" + "\n".join(violations))
    out.write("validate: scripts/ imports only the standard library\n")


def non_stdlib_imports(root: Path) -> list[str]:
    """file:line: module for every import that is neither stdlib nor a module under root."""
    local = {p.stem for p in root.rglob("*.py")} | {p.name for p in root.rglob("*") if p.is_dir()}
    allowed = set(sys.stdlib_module_names) | local | {"__future__"}
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                if name.split(".")[0] not in allowed:
                    found.append(f"{path.relative_to(root.parent)}:{node.lineno}: {name}")
    return found
