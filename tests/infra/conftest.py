"""Fixtures and options of the testinfra suite (see tests/infra/README.md)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import testinfra

from airflow_ami.driver.instance import Instance, ListenerRule

_INSTANCES: dict[str, Instance] = {}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("airflow-ami", "airflow-ami testinfra suite")
    group.addoption(
        "--airflow-ami-sleep",
        type=int,
        default=15,
        help="seconds each fan-out task sleeps (default 15)",
    )
    group.addoption(
        "--airflow-ami-run-timeout",
        type=float,
        default=600.0,
        help="seconds to wait for a DAG run to finish (default 600)",
    )
    group.addoption(
        "--airflow-ami-recovery-timeout",
        type=float,
        default=240.0,
        help="seconds a killed service has to come back and health to turn healthy (default 240)",
    )
    group.addoption(
        "--airflow-ami-reboot-timeout",
        type=float,
        default=900.0,
        help="seconds the instance has to answer again after a reboot (default 900)",
    )
    group.addoption(
        "--airflow-ami-allow-listener",
        action="append",
        default=[],
        metavar="PROTO:PORT[:any]",
        help="extend the listener allow-list, e.g. tcp:9100 (loopback) or tcp:9100:any",
    )
    group.addoption(
        "--airflow-ami-ignore-unowned-listeners",
        action="store_true",
        help="skip listening sockets owned by no process visible on the instance (only for "
        "an instance sharing its network namespace with its host, e.g. a dev container)",
    )
    group.addoption(
        "--airflow-ami-worker",
        action="append",
        default=[],
        metavar="HOST",
        help="a worker of the cluster whose controller is --hosts (testinfra spec, e.g. "
        "ssh://admin@10.0.1.6; repeat per worker): runs test_cluster.py instead of the "
        "single-instance checks",
    )
    group.addoption(
        "--airflow-ami-keep-dags",
        action="store_true",
        help="leave the uploaded test DAGs and their runs on the instance (debugging)",
    )


def _extra_rules(specs: list[str]) -> tuple[ListenerRule, ...]:
    rules = []
    for spec in specs:
        parts = spec.split(":")
        if len(parts) not in (2, 3) or parts[0] not in ("tcp", "udp") or not parts[1].isdigit():
            raise pytest.UsageError(f"--airflow-ami-allow-listener {spec!r}: want PROTO:PORT[:any]")
        anywhere = len(parts) == 3 and parts[2] == "any"
        rules.append(ListenerRule(f"allowed by {spec}", parts[0], int(parts[1]), (), not anywhere))
    return tuple(rules)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A cluster (--airflow-ami-worker given) is checked by test_cluster.py, a single
    instance by the rest; the slow (disruptive) checks run last, in file order."""
    cluster = bool(config.getoption("--airflow-ami-worker"))
    keep = [item for item in items if (item.path.name == "test_cluster.py") == cluster]
    deselected = [item for item in items if item not in keep]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = keep
    items.sort(key=lambda item: item.get_closest_marker("slow") is not None)


@pytest.fixture(scope="module")
def instance(host: Any, request: pytest.FixtureRequest) -> Instance:
    """The host under test, shared by every module of the session (one per host)."""
    key = host.backend.get_pytest_id()
    inst = _INSTANCES.get(key)
    if inst is None:
        opt = request.config.getoption
        inst = Instance(
            host=host,
            sleep_seconds=opt("--airflow-ami-sleep"),
            run_timeout=opt("--airflow-ami-run-timeout"),
            recovery_timeout=opt("--airflow-ami-recovery-timeout"),
            reboot_timeout=opt("--airflow-ami-reboot-timeout"),
            keep_dags=opt("--airflow-ami-keep-dags"),
            extra_allowed=_extra_rules(opt("--airflow-ami-allow-listener")),
            ignore_unowned_listeners=opt("--airflow-ami-ignore-unowned-listeners"),
        )
        _INSTANCES[key] = inst
    return inst


@pytest.fixture(scope="module")
def workers(request: pytest.FixtureRequest) -> list[Instance]:
    """The cluster's workers (--airflow-ami-worker), one Instance each."""
    found = []
    for spec in request.config.getoption("--airflow-ami-worker"):
        ssh_config = request.config.getoption("--ssh-config", None)
        host = testinfra.get_host(spec, ssh_config=ssh_config)
        key = host.backend.get_pytest_id()
        if key not in _INSTANCES:
            _INSTANCES[key] = Instance(
                host=host, run_timeout=request.config.getoption("--airflow-ami-run-timeout")
            )
        found.append(_INSTANCES[key])
    return found


@pytest.fixture(scope="module")
def settings(instance: Instance) -> dict[str, Any]:
    """What was asked for at bake time: /etc/airflow-ami/settings.json on the instance."""
    return instance.settings


@pytest.fixture(scope="session", autouse=True)
def _leave_instances_as_found() -> Iterator[None]:
    yield
    problems = []
    for key, inst in _INSTANCES.items():
        try:
            problems += [f"{key}: {p}" for p in inst.cleanup()]
        except Exception as exc:  # report every host, then fail
            problems.append(f"{key}: cleanup failed: {exc}")
    _INSTANCES.clear()
    if problems:
        pytest.fail("the suite could not undo its changes: " + "; ".join(problems))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    # Filled while the tests ran.
    from .test_resilience import RECOVERY  # noqa: PLC0415
    from .test_sandbox import EXPOSURES  # noqa: PLC0415

    if RECOVERY:
        terminalreporter.section("Airflow healthy again after a MySQL fault")
        for fault, seconds in RECOVERY.items():
            terminalreporter.write_line(f"{fault:<48} {seconds:6.1f} s")
    if EXPOSURES:
        terminalreporter.section("systemd exposure (systemd-analyze security; OK <= 4.9)")
        for unit, (exposure, rating) in sorted(EXPOSURES.items()):
            terminalreporter.write_line(f"{unit:<36} {exposure:4.1f} {rating}")
