"""The GitHub Actions workflow that bakes and proves the AMI on AWS: valid, linted, safe, consistent."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from airflow_ami import settings
from airflow_ami.builddir import BuildDir
from airflow_ami.settings import ARCHES, REPO_ROOT, BakeSettings, os_profiles

WORKFLOW = REPO_ROOT / ".github/workflows/build-ami.yml"
BIN = Path(sys.executable).parent
# owner/repo[/path]@<full commit sha> # vX.Y.Z: the comment says which release the sha is.
PINNED_USES = re.compile(r"^\s*(- )?uses: [\w.-]+/[\w./-]+@[0-9a-f]{40} # v\d+\.\d+\.\d+$")
ENV_REF = re.compile(r"^\$\{\{ env\.(\w+) \}\}$")
# Every ./bake call names the same build, so launch, verify and teardown find the build's records.
BAKE_TARGET = '--cloud aws --os "$AMI_OS" --arch "$AMI_ARCH" --region "$AWS_REGION"'


def load(text: str) -> dict[Any, Any]:
    return dict(yaml.safe_load(text))


def triggers(workflow: dict[Any, Any]) -> dict[str, Any]:
    # YAML 1.1 reads the bare key `on` as the boolean true.
    return dict(workflow[True])


def job(workflow: dict[Any, Any]) -> dict[str, Any]:
    return dict(workflow["jobs"]["build"])


def steps(workflow: dict[Any, Any]) -> list[dict[str, Any]]:
    return [step for body in workflow["jobs"].values() for step in body.get("steps", [])]


def step_running(workflow: dict[Any, Any], command: str) -> tuple[int, dict[str, Any]]:
    matches = [(i, s) for i, s in enumerate(steps(workflow)) if command in s.get("run", "")]
    assert len(matches) == 1, f"one step runs {command!r}"
    return matches[0]


def step_using(workflow: dict[Any, Any], action: str) -> dict[str, Any]:
    matches = [s for s in steps(workflow) if s.get("uses", "").startswith(f"{action}@")]
    assert len(matches) == 1, f"one step uses {action}"
    return matches[0]


def pin_problems(text: str) -> list[str]:
    """Every `uses:` that is not a full commit sha with its release in a comment."""
    lines = [line for line in text.splitlines() if re.match(r"^\s*(- )?uses:", line)]
    problems = [line.strip() for line in lines if not PINNED_USES.match(line)]
    # A `uses` the line check did not see (flow style, say) is a problem too.
    if len(lines) != len([s for s in steps(load(text)) if "uses" in s]):
        problems.append("a uses: outside one `uses: ref # vX.Y.Z` line")
    return problems


def write_scopes(workflow: dict[Any, Any]) -> set[str]:
    """Scopes granted write, at the workflow's level or any job's."""
    grants = [workflow.get("permissions"), *(body.get("permissions") for body in workflow["jobs"].values())]
    scopes: set[str] = set()
    for grant in grants:
        if isinstance(grant, str):
            scopes |= {"*"} if grant == "write-all" else set()
        elif grant:
            scopes |= {scope for scope, level in grant.items() if level == "write"}
    return scopes


def resolve(value: str, workflow: dict[Any, Any]) -> str:
    """A `${{ env.NAME }}` value as the job's env (or the workflow's) sets it."""
    match = ENV_REF.match(value)
    if not match:
        return value
    env = {**workflow.get("env", {}), **job(workflow).get("env", {})}
    return str(env[match.group(1)])


def run_tool(name: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BIN / name, *args], capture_output=True, text=True, check=False)


def test_workflow_matches_github_schema(tmp_path: Path) -> None:
    check = ("--builtin-schema", "vendor.github-workflows")
    ok = run_tool("check-jsonschema", *check, WORKFLOW)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    broken = tmp_path / "broken.yml"
    broken.write_text(WORKFLOW.read_text().replace("timeout-minutes: 120", "timeout-minutes: soon"))
    assert broken.read_text() != WORKFLOW.read_text()
    assert run_tool("check-jsonschema", *check, broken).returncode != 0


def test_actionlint_is_silent(tmp_path: Path) -> None:
    ok = run_tool("actionlint", WORKFLOW)
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, "", "")
    injected = tmp_path / "injected.yml"
    injected.write_text(
        WORKFLOW.read_text().replace(
            "run: ./bake verify", 'run: echo "${{ github.event.head_commit.message }}"; ./bake verify'
        )
    )
    assert injected.read_text() != WORKFLOW.read_text()
    assert "potentially untrusted" in run_tool("actionlint", injected).stdout


def test_every_action_is_pinned_to_a_commit_with_its_release() -> None:
    text = WORKFLOW.read_text()
    assert pin_problems(text) == []
    checkout = step_using(load(text), "actions/checkout")["uses"]
    assert pin_problems(text.replace(checkout, "actions/checkout@v4", 1)) != []
    assert pin_problems(re.sub(r" # v[\d.]+$", "", text, count=1, flags=re.M)) != []
    assert pin_problems(text.replace(checkout, checkout[:-1], 1)) != []


def test_permissions_are_oidc_and_read_only() -> None:
    workflow = load(WORKFLOW.read_text())
    assert workflow["permissions"] == {"id-token": "write", "contents": "read"}
    assert write_scopes(workflow) == {"id-token"}
    assert write_scopes({**workflow, "permissions": "write-all"}) == {"*"}
    assert "github.ref" in workflow["concurrency"]["group"]


def test_aws_credentials_come_only_from_an_assumed_role() -> None:
    text = WORKFLOW.read_text()
    for key in ("aws-access-key-id", "aws-secret-access-key", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert key.lower() not in text.lower()
    workflow = load(text)
    credentials = step_using(workflow, "aws-actions/configure-aws-credentials")["with"]
    assert re.match(
        r"^\$\{\{ (vars|secrets)\.AWS_ROLE_ARN( \|\| (vars|secrets)\.AWS_ROLE_ARN)? \}\}$",
        credentials["role-to-assume"],
    )
    assert resolve(credentials["aws-region"], workflow) == "${{ inputs.region || 'us-east-1' }}"


def test_triggers_and_inputs_cover_every_profile_and_arch() -> None:
    on = triggers(load(WORKFLOW.read_text()))
    inputs = on["workflow_dispatch"]["inputs"]
    assert inputs["os"]["options"] == list(os_profiles()) and inputs["os"]["default"] == "amazon-linux-2"
    assert inputs["arch"]["options"] == list(ARCHES)
    assert inputs["region"]["default"] == "us-east-1"
    assert on["push"]["branches"] == ["main"]
    for path in ("packer/**", "scripts/**", "airflow_ami/**", "tasks.py", "bake", "requirements.lock"):
        assert path in on["push"]["paths"]


def test_packer_version_is_pinned() -> None:
    workflow = load(WORKFLOW.read_text())
    version = resolve(step_using(workflow, "hashicorp/setup-packer")["with"]["version"], workflow)
    assert re.match(r"^\d+\.\d+\.\d+$", version)


def test_inputs_reach_scripts_only_through_env() -> None:
    workflow = load(WORKFLOW.read_text())
    for step in steps(workflow):
        assert "${{" not in step.get("run", ""), step
        if "./bake" in step.get("run", ""):
            assert BAKE_TARGET in step["run"], step


def test_launch_allows_only_the_runner_and_teardown_always_runs_last() -> None:
    workflow = load(WORKFLOW.read_text())
    build, _ = step_running(workflow, "./bake build-ami")
    launch, launch_step = step_running(workflow, "./bake launch")
    verify, _ = step_running(workflow, "./bake verify")
    teardown, teardown_step = step_running(workflow, "./bake teardown")
    assert build < launch < verify < teardown == len(steps(workflow)) - 1
    assert re.search(r'--allow-cidr "\$\{?\w+\}?/32"', launch_step["run"])
    assert "https://checkip.amazonaws.com" in launch_step["run"]
    assert teardown_step["if"] == "always()"
    assert "if" not in launch_step


@pytest.mark.parametrize("os_name", os_profiles())
@pytest.mark.parametrize("arch", ARCHES)
def test_uploads_the_record_build_ami_writes(os_name: str, arch: str) -> None:
    upload = step_using(load(WORKFLOW.read_text()), "actions/upload-artifact")["with"]
    assert upload["if-no-files-found"] == "error"
    path = upload["path"].replace("${{ env.AMI_OS }}", os_name).replace("${{ env.AMI_ARCH }}", arch)
    record = BuildDir.of(
        settings.load(BakeSettings, cli={"cloud": "aws", "os": os_name, "arch": arch})
    ).ami_record
    assert REPO_ROOT / path == record


def test_job_outputs_the_ami_id_build_ami_publishes() -> None:
    workflow = load(WORKFLOW.read_text())
    # build-ami appends ami_id=... to $GITHUB_OUTPUT itself (manifest.publish_github_output).
    _, build_step = step_running(workflow, "./bake build-ami")
    output = re.fullmatch(r"\$\{\{ steps\.(\S+)\.outputs\.ami_id \}\}", job(workflow)["outputs"]["ami_id"])
    assert output and output.group(1) == build_step["id"]


def test_every_bake_command_in_the_workflow_uses_flags_its_task_takes() -> None:
    """A task refuses a flag it does not use: the workflow must not pass one."""
    import tasks  # noqa: PLC0415  (the repository's task list)

    text = WORKFLOW.read_text().replace("\\\n", " ")
    commands = re.findall(r"\./bake ([a-z-]+)((?: [^\n]*)?)", text)
    assert commands
    for task_name, rest in commands:
        taken = {
            f"--{name.replace('_', '-')}" for arg in tasks.ns[task_name].get_arguments() for name in arg.names
        }
        used = set(re.findall(r"(--[a-z0-9-]+)", rest.split(" -- ")[0]))
        assert used <= taken, (task_name, sorted(used - taken))
