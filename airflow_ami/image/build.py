"""The build-ami and validate pipelines: render -> check -> packer build -> record."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, TextIO

from airflow_ami.builddir import BuildDir
from airflow_ami.clouds import ec2
from airflow_ami.image import manifest, packer
from airflow_ami.image.render import render
from airflow_ami.settings import ARCHES, RECORD, REPO_ROOT, BakeSettings, load, os_profiles


def git_sha() -> str:
    result = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )
    return result.stdout.strip() if result.returncode == 0 else "unknown"


def check_template(build: BuildDir) -> None:
    packer.fmt_check(build.template)
    packer.validate(build.template)


def build_ami(
    settings: BakeSettings, env: Mapping[str, str] | None = None, out: TextIO = sys.stdout
) -> dict[str, Any]:
    """Bake the AMI; returns (and writes to ami.json) what was built."""
    version = packer.version()
    build = BuildDir(render(settings, version))
    check_template(build)
    build.manifest.unlink(missing_ok=True)
    # Packer's AWS SDK reads the same profile from the environment as boto3 does from settings.
    profile = {"AWS_PROFILE": settings.profile} if settings.profile else {}
    source_ami = packer.build(build.template, env={**profile, **(env or {})}, out=out)
    amis = manifest.last_run_amis(build.manifest)
    if not packer.loads_plugins(version):
        ec2.require_imdsv2(settings, amis, env)
    ami_id = amis[settings.region]
    record = {
        **settings.reaching(RECORD),
        "ami_id": ami_id,
        "amis": amis,
        "name": ec2.image_name(settings, settings.region, ami_id, env),
        "source_ami": source_ami,
        "packer_version": ".".join(map(str, version)),
        "imds_support": "v2.0",
        "template_sha256": hashlib.sha256(build.template.read_bytes()).hexdigest(),
        "git_sha": git_sha(),
    }
    build.write(build.ami_record, record)
    manifest.publish_github_output(ami_id)
    return record


def validate_templates(out: TextIO = sys.stdout) -> None:
    """fmt + validate the template for every OS profile and arch; fmt the plugin-era variant too."""
    version = packer.version()
    for os_name in os_profiles():
        for arch in ARCHES:
            settings = load(
                BakeSettings, cli={"os": os_name, "arch": arch, "build_name": f"validate-{os_name}-{arch}"}
            )
            # A Packer before plugins needs the build host's CIDRs; the documentation range will do.
            given = (
                settings if packer.loads_plugins(version) else replace(settings, ssh_cidrs=("192.0.2.0/24",))
            )
            check_template(BuildDir(render(given, version)))
            modern = replace(settings, build_name=f"validate-{os_name}-{arch}-modern")
            packer.fmt_check(BuildDir(render(modern, max(version, packer.PLUGINS_SINCE))).template)
            out.write(f"validate: {os_name} {arch}: packer fmt + validate ok\n")
