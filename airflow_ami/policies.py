"""The least each role's instance profile needs, from one declaration of the AWS calls its
instance makes.

ROLE_CALLS is that declaration: per role, each action with the resources it acts on
(CLUSTER: the cluster's name; the buckets as launched). `./bake policies` prints the
policies made from it, the README shows them, and tests/unit/test_policies.py holds it to
the calls scripts/provisioning makes (a call added there and not here fails the test) and
to the README (a README edited by hand fails it too). The store is SSM (the default
`secret_store`); with Secrets Manager the same names take secretsmanager:GetSecretValue,
CreateSecret and PutSecretValue.
"""

from __future__ import annotations

import json

STORE = "arn:aws:ssm:*:*:parameter/airflow-ami/CLUSTER"
DAGS, LOGS = "arn:aws:s3:::my-dags-bucket", "arn:aws:s3:::my-logs-bucket"
WORKERS_GROUP = "arn:aws:autoscaling:*:*:autoScalingGroup:*:autoScalingGroupName/airflow-ami-CLUSTER-workers"

# role -> ((actions, resources), ...): what its instance calls, on what.
ROLE_CALLS: dict[str, tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]] = {
    "controller": (
        # Its cluster's secrets, the workers' document and its own address: it writes all three.
        (("ssm:GetParameter", "ssm:PutParameter"), (f"{STORE}/*",)),
        # Airflow's S3 DAG bundle reads; its task logs' handler reads and writes.
        (("s3:GetObject",), (f"{DAGS}/*",)),
        (("s3:GetObject", "s3:PutObject"), (f"{LOGS}/*",)),
        (("s3:ListBucket",), (DAGS, LOGS)),
        (("cloudwatch:PutMetricData",), ("*",)),
    ),
    "worker": (
        # Only what a worker holds, and where its controller is: never written.
        (("ssm:GetParameter",), (f"{STORE}/worker-secrets", f"{STORE}/controller")),
        (("s3:GetObject",), (f"{DAGS}/*",)),
        (("s3:GetObject", "s3:PutObject"), (f"{LOGS}/*",)),
        (("s3:ListBucket",), (DAGS, LOGS)),
        (("cloudwatch:PutMetricData",), ("*",)),
        # Its own leaving (the termination lifecycle hook).
        (("autoscaling:CompleteLifecycleAction",), (WORKERS_GROUP,)),
    ),
}


def policy(role: str) -> dict[str, object]:
    """The IAM policy document of `role`'s instance profile."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": list(actions) if len(actions) > 1 else actions[0],
                "Resource": list(resources) if len(resources) > 1 else resources[0],
            }
            for actions, resources in ROLE_CALLS[role]
        ],
    }


def actions(role: str) -> set[str]:
    return {action for granted, _ in ROLE_CALLS[role] for action in granted}


def render() -> str:
    """The README's block: each role's policy, as `./bake policies` prints it."""
    return (
        "".join(
            f"{role}:\n\n```json\n{json.dumps(policy(role), indent=2)}\n```\n\n" for role in ROLE_CALLS
        ).rstrip("\n")
        + "\n"
    )
