"""The layout's own rules: product code never imports tests, one name per thing, each fact once."""

from __future__ import annotations

import ast
import re
from collections import Counter
from pathlib import Path

from airflow_ami.settings import REPO_ROOT

PRODUCT = ("airflow_ami", "scripts")
# One module name on both sides of the seam for one notion: the bake phase. settings/bake.py
# declares what a bake is made of; scripts/provisioning/bake/ runs during it.
TWINS = {"bake"}


def python_files(*roots: str) -> list[Path]:
    return [p for root in roots for p in sorted((REPO_ROOT / root).rglob("*.py"))]


def imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def test_nothing_outside_tests_imports_from_tests() -> None:
    offenders = {
        str(path.relative_to(REPO_ROOT)): sorted(
            m for m in imported_modules(path) if m.split(".")[0] == "tests"
        )
        for path in [*python_files(*PRODUCT), REPO_ROOT / "tasks.py"]
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_no_module_name_stands_for_two_things() -> None:
    names = Counter()
    for path in python_files(*PRODUCT):
        names[path.stem if path.name != "__init__.py" else path.parent.name] += 1
    twice = {name for name, count in names.items() if count > 1 and name not in ("__main__",)}
    assert twice <= TWINS, sorted(twice - TWINS)


def declarations_of(pattern: str) -> list[str]:
    """file:line of every line of product code that matches `pattern` (a definition)."""
    found = []
    templates = sorted((REPO_ROOT / "scripts" / "provisioning" / "bake" / "templates").glob("*.j2"))
    for path in [*python_files(*PRODUCT), REPO_ROOT / "bake", *templates]:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(pattern, line):
                found.append(f"{path.relative_to(REPO_ROOT)}:{number}")
    return found


def test_each_fact_the_seam_shares_is_declared_once() -> None:
    once = {
        "the OS facts": r"^OS_FACTS = ",
        "reading settings.json": r"^def read_settings\(",
        "the user-data document": r"^def user_data\(",
        "the limit of a pinned parallelism": r"^MAX_PARALLELISM = ",
        "the API port's default": r"^\s+8080,$",
        "uv's release": r"uv_version=|^LOCKED_UV = ",
        "the secret stores": r"\(\"ssm\", \"secretsmanager\"\)",
        "a cluster name's form": r"1-(40|%d) lower-case",
        "the StatsD prefix": r"^STATSD_PREFIX = |statsd_prefix = \w",
        "where task logs go": r"task_logs_s3_uri or .*\[\"task_logs_s3_uri\"\]",
    }
    counts = {fact: declarations_of(pattern) for fact, pattern in once.items()}
    assert {fact: len(where) for fact, where in counts.items()} == {
        **dict.fromkeys(once, 1),
        "uv's release": 2,  # ./bake and the settings both read requirements.lock's pin
    }, counts
    # Each OS profile's package manager is in its profile (os_facts), not in code too.
    assert declarations_of(r"\"amazon-linux-20?2?3?\": \"(yum|dnf)\"") == []
    locked = REPO_ROOT.joinpath("requirements.lock").read_text()
    assert len(re.findall(r"^uv==", locked, re.M)) == 1
    assert not re.search(r'uv_version="?\d', (REPO_ROOT / "bake").read_text())
