"""Each role's instance profile, from one declaration held to the instance's code and the README."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

from airflow_ami import policies
from airflow_ami.seam import SCRIPTS_DIR
from airflow_ami.settings import REPO_ROOT

PROVISIONING = SCRIPTS_DIR / "provisioning"
# The instance's own AWS client names its service as signed (monitoring is CloudWatch's).
IAM_PREFIX = {
    "ssm": "ssm",
    "secretsmanager": "secretsmanager",
    "autoscaling": "autoscaling",
    "monitoring": "cloudwatch",
}
S3_CALLS = {"put_s3_object": "s3:PutObject", "get_s3_object": "s3:GetObject", "list_s3_keys": "s3:ListBucket"}
# The declaration is written for SSM (the default store); Secrets Manager's calls stand for these.
AS_SSM = {
    "secretsmanager:GetSecretValue": "ssm:GetParameter",
    "secretsmanager:CreateSecret": "ssm:PutParameter",
    "secretsmanager:PutSecretValue": "ssm:PutParameter",
}


def aws_calls(path: Path) -> set[str]:
    """IAM actions of the AWS calls a module makes: a (service, action) pair of literals in
    a call's arguments, or one of awsapi's S3 functions named."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            words = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
            found |= {
                f"{IAM_PREFIX[service]}:{action.rsplit('.', 1)[-1]}"
                for service, action in itertools.pairwise(words)
                if service in IAM_PREFIX
            }
        if isinstance(node, ast.Name) and node.id in S3_CALLS:
            found.add(S3_CALLS[node.id])
    return {AS_SSM.get(action, action) for action in found}


def code_calls(*relative: str) -> set[str]:
    paths = [PROVISIONING / r for r in relative] or list(PROVISIONING.rglob("*.py"))
    return set().union(*(aws_calls(p) for p in paths))


def test_the_declaration_is_every_call_the_instance_makes_and_no_other() -> None:
    declared = policies.actions("controller") | policies.actions("worker")
    found = code_calls()
    assert found == declared, (
        f"in the code, not declared: {found - declared}; declared, not called: {declared - found}"
    )


def test_each_role_is_declared_the_calls_of_the_code_it_runs() -> None:
    assert code_calls("running/leave.py") <= policies.actions("worker")
    for role in ("controller", "worker"):
        assert code_calls("running/metrics.py") <= policies.actions(role), role
    assert code_calls("running/backup.py") <= policies.actions("controller")


def test_workers_write_neither_the_store_nor_the_dag_bucket() -> None:
    assert "ssm:PutParameter" not in policies.actions("worker")
    writes = [resources for granted, resources in policies.ROLE_CALLS["worker"] if "s3:PutObject" in granted]
    assert writes and all(not r.startswith(policies.DAGS) for rs in writes for r in rs)


def test_the_readme_shows_the_policies_as_made_from_the_declaration() -> None:
    assert policies.render() in (REPO_ROOT / "README.md").read_text()
