"""The build-ami and validate pipelines: render -> check -> packer build -> record."""

from __future__ import annotations

import ast
import hashlib
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from . import ec2, manifest, packer
from .render import MODERN_PACKER, render
from .settings import PACKER_DIR, REPO_ROOT, Settings, load_settings

ARCHES = ("x86_64", "arm64")
SCRIPTS_DIR = REPO_ROOT / "scripts"
# Amazon Linux 2's python3 is 3.7: scripts/ must not need anything newer.
VERMIN_ARGS = ("-t=3.7-", "--no-tips", "--violations", "--eval-annotations")


class CheckError(RuntimeError):
    """A code check (vermin, ruff, stdlib-only imports) failed."""


def git_sha() -> str:
    result = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )
    return result.stdout.strip() if result.returncode == 0 else "unknown"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_template(template: Path) -> None:
    packer.fmt_check(template)
    packer.validate(template)


def build_ami(
    settings: Settings, env: Mapping[str, str] | None = None, out: TextIO = sys.stdout
) -> dict[str, Any]:
    """Bake the AMI; returns (and writes to ami.json) what was built."""
    version = packer.version()
    build_dir = render(settings, version)
    template = build_dir / "airflow.pkr.hcl"
    check_template(template)
    manifest_path = build_dir / "manifest.json"
    manifest_path.unlink(missing_ok=True)
    source_ami = packer.build(template, env=env, out=out)
    amis = manifest.last_run_amis(manifest_path)
    if version < MODERN_PACKER:
        ec2.require_imdsv2(settings, amis, env)
    ami_id = amis[settings.region]
    record = {
        "ami_id": ami_id,
        "region": settings.region,
        "amis": amis,
        "name": ec2.image_name(settings, settings.region, ami_id, env),
        "source_ami": source_ami,
        "os": settings.os,
        "arch": settings.arch,
        "airflow_version": settings.airflow_version,
        "python_version": settings.python_version,
        "mysql_version": settings.mysql_version,
        "packer_version": ".".join(map(str, version)),
        "imds_support": "v2.0",
        "template_sha256": sha256(template),
        "git_sha": git_sha(),
    }
    manifest.write_record(build_dir / "ami.json", record)
    manifest.publish_github_output(ami_id)
    return record


def profiles() -> list[str]:
    return sorted(p.stem for p in (PACKER_DIR / "profiles").glob("*.yaml"))


def validate_templates(out: TextIO = sys.stdout) -> None:
    """fmt + validate the template for every OS profile and arch; fmt the modern variant too."""
    version = packer.version()
    for os_name in profiles():
        for arch in ARCHES:
            settings = load_settings(
                cli={"os": os_name, "arch": arch, "build_name": f"validate-{os_name}-{arch}"}
            )
            check_template(render(settings, version) / "airflow.pkr.hcl")
            modern = replace(settings, build_name=f"validate-{os_name}-{arch}-modern")
            packer.fmt_check(render(modern, max(version, MODERN_PACKER)) / "airflow.pkr.hcl")
            out.write(f"validate: {os_name} {arch}: packer fmt + validate ok\n")


def check_code(out: TextIO = sys.stdout) -> None:
    """scripts/ must run on Python 3.7 with the standard library only; all Python is ruff-clean."""
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
