"""scripts/ and the driver's probe run on the instance's bare python3 (3.7 on Amazon Linux 2):
the checks that keep them so."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from airflow_ami.codecheck import VERMIN_ARGS, check_code, non_stdlib_imports
from airflow_ami.driver.instance import PROBE_SRC
from airflow_ami.seam import SCRIPTS_DIR

VERMIN = [str(Path(sys.executable).parent / "vermin"), *VERMIN_ARGS]


def test_the_repository_passes_vermin_ruff_and_the_stdlib_check() -> None:
    check_code()


def test_scripts_import_only_the_standard_library_and_each_other() -> None:
    assert non_stdlib_imports(SCRIPTS_DIR, PROBE_SRC) == []


def test_a_third_party_import_is_reported(tmp_path: Path) -> None:
    scripts = tmp_path / "scripts"
    (scripts / "pkg").mkdir(parents=True)
    (scripts / "pkg" / "__init__.py").write_text("")
    (scripts / "step.py").write_text("import json\nimport pkg\nfrom yaml import safe_load\n")
    assert non_stdlib_imports(scripts) == ["scripts/step.py:3: yaml"]


def test_vermin_rejects_syntax_newer_than_python_3_7(tmp_path: Path) -> None:
    newer = tmp_path / "newer.py"
    newer.write_text("def f(x):\n    if (y := x):\n        return y\n")
    assert subprocess.run([*VERMIN, str(newer)], capture_output=True, check=False).returncode != 0
    older = tmp_path / "older.py"
    older.write_text("def f(x):\n    return '%s' % x\n")
    assert subprocess.run([*VERMIN, str(older)], capture_output=True, check=False).returncode == 0
