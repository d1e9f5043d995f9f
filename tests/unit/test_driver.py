"""Unit tests of the instance driver's pure helpers (airflow_ami/driver: instance.py, probe.py)
and of the suite's negative checks (tests/infra/breakage.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from airflow_ami.driver import instance as lib
from airflow_ami.driver import probe
from tests.infra import breakage


def test_max_concurrency_and_common_instant() -> None:
    parallel = [(0.0, 10.0), (1.0, 11.0), (2.0, 12.0)]
    serial = [(0.0, 10.0), (10.0, 20.0)]
    assert lib.max_concurrency(parallel) == 3
    assert lib.common_instant(parallel) == 2.0
    assert lib.max_concurrency(serial) == 1  # touching ends do not overlap
    assert lib.common_instant(serial) is None
    assert lib.common_instant([]) is None


@pytest.mark.parametrize(
    ("text", "size"), [("64M", 64 << 20), ("1G", 1 << 30), ("512k", 512 << 10), ("4096", 4096)]
)
def test_parse_size(text: str, size: int) -> None:
    assert lib.parse_size(text) == size


@pytest.mark.parametrize(
    ("text", "version"),
    [("9.7.4-2", (9, 7, 4)), ("8.0.36", (8, 0, 36)), ("3.12.1\n", (3, 12, 1)), ("3.3.2", (3, 3, 2))],
)
def test_parse_version(text: str, version: tuple[int, ...]) -> None:
    assert lib.parse_version(text) == version


def test_parse_ts() -> None:
    assert lib.parse_ts("1970-01-01T00:00:10Z") == 10.0
    assert lib.parse_ts("1970-01-01T00:00:10.500000+00:00") == 10.5


def _sock(proto: str, addr: str, port: int, units: list[str], pids: list[int] | None = None):
    return {
        "proto": proto,
        "address": addr,
        "port": port,
        "units": units,
        "comms": [],
        "pids": [1] if pids is None else pids,
    }


def test_listener_allow_list() -> None:
    rules = lib.listener_allow_list(8080, "mysql.service")
    good = [
        _sock("tcp", "0.0.0.0", 22, ["ssh.service"]),
        _sock("tcp", "127.0.0.1", 2222, ["ssh.service"]),
        _sock("tcp", "0.0.0.0", 8080, ["airflow-api-server.service"]),
        _sock("tcp", "127.0.0.1", 3306, ["mysql.service"]),
        _sock("tcp", "::1", 33060, ["mysql.service"]),
        _sock("udp", "0.0.0.0", 68, ["systemd-networkd.service"]),
    ]
    assert lib.unexpected_listeners(good, rules) == []
    bad = [
        _sock("tcp", "0.0.0.0", 3306, ["mysql.service"]),  # MySQL on the network
        _sock("tcp", "::", 8793, ["airflow-scheduler.service"]),  # log server exposed
        _sock("tcp", "0.0.0.0", 8080, ["nginx.service"]),  # API port, wrong owner
        _sock("tcp", "0.0.0.0", 111, ["rpcbind.service"]),
    ]
    assert lib.unexpected_listeners(bad, rules) == bad
    unowned = [_sock("tcp", "0.0.0.0", 2024, [], pids=[])]
    assert lib.unexpected_listeners(unowned, rules) == unowned
    assert lib.unexpected_listeners(unowned, rules, ignore_unowned=True) == []


def test_is_loopback() -> None:
    assert lib.is_loopback("127.0.0.1") and lib.is_loopback("::1")
    assert lib.is_loopback("::ffff:127.0.0.1")
    assert not lib.is_loopback("0.0.0.0") and not lib.is_loopback("::")


def test_expect_names_all_three_parts() -> None:
    msg = lib.expect("A", "B", "journalctl -u x")
    assert msg == "expected: A | found: B | look at: journalctl -u x"


def test_probe_decodes_proc_net_addresses() -> None:
    assert probe.decode_addr("0100007F", 4) == "127.0.0.1"
    assert probe.decode_addr("00000000", 4) == "0.0.0.0"
    assert probe.decode_addr("00000000000000000000000001000000", 6) == "::1"


def test_probe_reads_secrets_without_printing_them(tmp_path: Path, monkeypatch) -> None:
    env = tmp_path / "secrets.env"
    env.write_text(
        "# comment\n"
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=mysql+mysqldb://airflow:p%40ssw0rdXYZ@localhost/airflow\n"
        "AIRFLOW__CORE__FERNET_KEY='abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG='\n"
        "SHORT=abc\n"
    )
    pw = tmp_path / "admin-password"
    pw.write_text("AdminPassw0rd123\n")
    monkeypatch.setattr(probe, "SECRETS_ENV", str(env))
    monkeypatch.setattr(probe, "ADMIN_PASSWORD", str(pw))
    found = probe.read_secrets()
    assert "SHORT" not in found
    assert found["AIRFLOW__CORE__FERNET_KEY"].startswith("abcdef")
    assert found["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN (password part, decoded)"] == "p@ssw0rdXYZ"
    assert any(k.startswith("admin password") for k in found)
    pats = probe.needles(found)
    hits = probe.scan_stream(
        __import__("io").BytesIO(b"x" * (3 << 20) + b"AdminPassw0rd123" + b"y" * 10), pats
    )
    assert hits == {"admin password (" + str(pw) + ")"}


def test_breakage_causes_match_the_suite_messages() -> None:
    """The regexes breakage.py looks for are the ones the tests actually print."""
    samples = {
        "parallelism": [
            lib.expect("x", "parallelism 1: serial execution", "y"),
            lib.expect("x", "at most 1 ran at once (parallelism 1); intervals ...", "y"),
        ],
        "mysql-public": [
            lib.expect(
                "x",
                "MySQL listening beyond loopback: "
                + str([lib.describe_listener(_sock("tcp", "0.0.0.0", 3306, ["mysql.service"]))]),
                "y",
            ),
            lib.expect("x", "@@bind_address=0.0.0.0 @@port=3306", "y"),
        ],
        "scheduler-disabled": [
            lib.expect("x", "systemctl is-enabled airflow-scheduler.service -> disabled", "y")
        ],
    }
    for case, spec in breakage.CASES.items():
        text = "\n".join(samples[case])
        for cause in spec.causes:
            assert re.search(cause, text), (case, cause)


def test_mount_mode_reads_the_mount_on_top_that_holds_the_path() -> None:
    from tests.infra.test_sandbox import mount_mode  # noqa: PLC0415

    mountinfo = "\n".join(
        [
            "20 1 0:21 / / rw,relatime shared:1 - ext4 /dev/root rw",
            "31 20 0:21 /usr /usr ro,relatime shared:2 - ext4 /dev/root rw",
            "32 20 0:21 /etc /etc rw,relatime shared:3 - ext4 /dev/root rw",
            "33 32 0:21 /etc /etc ro,relatime shared:4 - ext4 /dev/root rw",
            "34 33 0:21 /etc/airflow /etc/airflow rw,relatime shared:5 - ext4 /dev/root rw",
        ]
    )
    assert mount_mode(mountinfo, "/usr/bin/python3") == "ro"
    assert mount_mode(mountinfo, "/etc") == "ro"
    assert mount_mode(mountinfo, "/etc/airflow/secrets.env") == "rw"
    assert mount_mode(mountinfo, "/etc/airflowx") == "ro"
    assert mount_mode(mountinfo, "/opt/airflow/logs") == "rw"
