"""api_tls self-signed, end to end: an image baked with it serves the API over HTTPS with
a certificate made at first boot, and its in-host clients use it (the tasks reach the
execution API through it, the suite's probe verifies it).

Bakes its own image (the rehearsal keeps the default, plain HTTP) under its own build
name, before the rehearsal runs (file order).
"""

from __future__ import annotations

from .conftest import bake, our_leftovers

BUILD_NAME = "debian-x86_64-local-api-tls"
CHECKS = "test_network or test_dag_runs or test_airflow"


def test_a_self_signed_image_serves_https_to_its_own_tasks() -> None:
    result = bake(
        "rehearse",
        "--api-tls",
        "self-signed",
        "--build-name",
        BUILD_NAME,
        "--",
        "-q",
        "-rA",
        "-m",
        "not slow",
        "-k",
        CHECKS,
    )
    assert result.returncode == 0, "rehearse with api_tls self-signed failed; its output is above"
    for check in ("test_api_tls_as_configured", "test_fanout_runs_in_parallel"):
        assert f"PASSED tests/infra/test_network.py::{check}" in result.stdout or (
            f"PASSED tests/infra/test_dag_runs.py::{check}" in result.stdout
        ), f"{check} did not pass on the api_tls image"
    assert our_leftovers() == []
