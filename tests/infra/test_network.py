"""Network: MySQL on loopback only, the API on its port, nothing else unexpected."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_ami.driver.instance import (
    API_TLS_CERT,
    API_TLS_KEY,
    Instance,
    describe_listener,
    expect,
    is_loopback,
    journal,
    layout,
    listener_allow_list,
    unexpected_listeners,
)


@pytest.fixture(scope="module")
def listeners(instance: Instance) -> list[dict[str, Any]]:
    return list(instance.probe("listeners")["listeners"])


def mysql_sockets(instance: Instance, listeners: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        s
        for s in listeners
        if instance.mysql_unit in s["units"] or "mysqld" in s["comms"] or s["port"] in (3306, 33060)
    ]


def test_mysql_listens_on_loopback_only(instance: Instance, listeners: list[dict[str, Any]]) -> None:
    socks = mysql_sockets(instance, listeners)
    exposed = [describe_listener(s) for s in socks if not is_loopback(s["address"])]
    assert not exposed, expect(
        "MySQL bound to loopback only (bind-address=127.0.0.1, mysqlx-bind-address=127.0.0.1)",
        f"MySQL listening beyond loopback: {exposed}",
        "mysql -e 'SELECT @@bind_address, @@mysqlx_bind_address'; "
        "grep -rn bind.address /etc/mysql /etc/my.cnf /etc/my.cnf.d 2>/dev/null",
    )
    assert any(s["port"] == 3306 and is_loopback(s["address"]) for s in socks), expect(
        "MySQL listening on 127.0.0.1:3306",
        [describe_listener(s) for s in socks] or "no MySQL listener",
        f"{journal(instance.mysql_unit)}; ss -ltnp",
    )


def test_mysql_bind_address_variable(instance: Instance) -> None:
    rows = instance.mysql("SELECT @@bind_address, @@port")
    bind, port = rows[0][0], rows[0][1]
    assert bind in ("127.0.0.1", "localhost", "::1") and port == "3306", expect(
        "@@bind_address=127.0.0.1 and @@port=3306",
        f"@@bind_address={bind} @@port={port}",
        "grep -rn 'bind.address\\|port' /etc/mysql /etc/my.cnf /etc/my.cnf.d 2>/dev/null",
    )


def test_api_listens_on_configured_port(instance: Instance, listeners: list[dict[str, Any]]) -> None:
    port = instance.api_port
    socks = [s for s in listeners if s["proto"] == "tcp" and s["port"] == port]
    owners = {u for s in socks for u in s["units"]}
    assert socks and "airflow-api-server.service" in owners, expect(
        f"airflow-api-server.service listening on port {port} (api_port in {layout.BAKED_SETTINGS})",
        [describe_listener(s) for s in socks] or f"nothing on port {port}",
        f"{journal('airflow-api-server.service')}; ss -ltnp",
    )
    host = instance.settings["api_host"]
    wildcard = host in ("0.0.0.0", "::")
    assert any(
        s["address"] in (host, "::", "0.0.0.0") if wildcard else s["address"] == host for s in socks
    ), expect(
        f"the API listening on {host}:{port} (api_host in {layout.BAKED_SETTINGS})",
        [describe_listener(s) for s in socks],
        "[api] host in /opt/airflow/airflow.cfg",
    )


def test_no_unexpected_listeners(instance: Instance, listeners: list[dict[str, Any]]) -> None:
    rules = listener_allow_list(instance.api_port, instance.mysql_unit) + instance.extra_allowed
    extra = unexpected_listeners(listeners, rules, ignore_unowned=instance.ignore_unowned_listeners)
    allowed = "; ".join(
        f"{r.what} {r.proto}/{r.port or 'any port'} {'loopback' if r.loopback_only else 'any address'}"
        for r in rules
    )
    assert not extra, expect(
        f"only allow-listed listeners ({allowed})",
        f"unexpected: {[describe_listener(s) for s in extra]}",
        "ss -tulpn on the instance; the owning unit's `systemctl cat`; extend the list with "
        "--airflow-ami-allow-listener PROTO:PORT[:any] if it is wanted",
    )


def test_api_tls_as_configured(instance: Instance) -> None:
    """api_tls self-signed: HTTPS with this instance's certificate (every name it has verifies,
    the key is readable by Airflow only) and no plain HTTP; none: plain HTTP (api_url)."""
    tls = instance.settings["api_tls"]
    url = instance.settings["api_url"]
    assert url.startswith("https://" if tls == "self-signed" else "http://"), expect(
        f"api_url for api_tls {tls}", url, layout.BAKED_SETTINGS
    )
    if tls != "self-signed":
        return
    key = instance.check(f"stat -c '%a %U:%G' {API_TLS_KEY}").strip()
    assert key == "640 root:airflow", expect(f"{API_TLS_KEY} 640 root:airflow", key, f"ls -l {API_TLS_KEY}")
    found = instance.probe("tls-check")
    failed = {name: error for name, error in found["verified"].items() if error}
    assert not failed, expect(
        f"the API's certificate ({API_TLS_CERT}) verifying as each name of the instance",
        failed,
        f"openssl x509 -noout -ext subjectAltName -in {API_TLS_CERT}; {journal('airflow-firstboot.service')}",
    )
    assert not found["plain_http"].startswith("HTTP "), expect(
        "no plain HTTP answer on the TLS port", found["plain_http"], "[api] ssl_cert in airflow.cfg"
    )
