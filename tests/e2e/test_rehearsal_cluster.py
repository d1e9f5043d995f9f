"""The cluster rehearsal, end to end: `./bake rehearse --workers 2` on the AMI the
single-instance rehearsal (test_rehearsal.py, just before this module) built."""

from __future__ import annotations

from .conftest import bake, our_leftovers

PHASES = ("launch-controller", "launch-workers", "verify", "teardown")


def test_rehearse_a_controller_and_two_workers() -> None:
    result = bake("rehearse", "--workers", "2", "--worker-concurrency", "4", "--", "-rA")
    assert result.returncode == 0, "rehearse --workers 2 failed; its output is above"
    assert "rehearse: passed" in result.stdout
    assert "rehearse: reusing ami-" in result.stdout, "the cluster rehearsal baked instead of reusing the AMI"
    for phase in PHASES:
        assert f"rehearse: --- {phase}" in result.stdout
    assert (
        "PASSED tests/infra/test_cluster.py::test_a_fan_out_spreads_over_the_workers_and_overlaps"
        in result.stdout
    )
    assert our_leftovers() == []
