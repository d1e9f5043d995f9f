"""Uploaded by the airflow-ami testinfra suite; removed when the suite ends.

A task pushes an 8 MiB XCom (plus its sha256 as a second, small XCom); the
downstream task pulls it and fails unless length and digest match.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime

from airflow.sdk import dag, task

SIZE = 8 * 1024 * 1024  # characters (ASCII hex, so also bytes)


@dag(
    dag_id="airflow_ami_testinfra_xcom",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    tags=["airflow-ami-testinfra"],
)
def airflow_ami_testinfra_xcom() -> None:
    @task
    def produce(**context: object) -> str:
        payload = secrets.token_hex(SIZE // 2)
        digest = hashlib.sha256(payload.encode("ascii")).hexdigest()
        context["ti"].xcom_push(key="digest", value=digest)  # type: ignore[attr-defined]
        return payload

    @task
    def consume(payload: str, **context: object) -> dict[str, object]:
        expected = context["ti"].xcom_pull(task_ids="produce", key="digest")  # type: ignore[attr-defined]
        actual = hashlib.sha256(payload.encode("ascii")).hexdigest()
        result = {
            "length": len(payload),
            "expected_length": SIZE,
            "sha256": actual,
            "expected_sha256": expected,
        }
        if len(payload) != SIZE or actual != expected:
            raise ValueError(f"8 MiB XCom came back damaged: {result}")
        return result

    consume(produce())


airflow_ami_testinfra_xcom()
