"""MySQL: server variables, the airflow database and its accounts."""

from __future__ import annotations

from typing import Any

from airflow_ami.driver.instance import Instance, expect, layout, parse_size

VARS_HINT = "mysql -e \"SHOW VARIABLES LIKE '{name}'\"; grep -rn {name} /etc/mysql /etc/my.cnf.d"


def variable(instance: Instance, name: str) -> str:
    rows = instance.mysql(f"SHOW GLOBAL VARIABLES LIKE '{name}'")
    return rows[0][1] if rows else "<unset>"


def test_explicit_defaults_for_timestamp(instance: Instance) -> None:
    value = variable(instance, "explicit_defaults_for_timestamp")
    assert value.upper() in ("ON", "1"), expect(
        "explicit_defaults_for_timestamp=ON",
        value,
        VARS_HINT.format(name="explicit_defaults_for_timestamp"),
    )


def test_max_allowed_packet(instance: Instance, settings: dict[str, Any]) -> None:
    want = parse_size(settings["max_allowed_packet"])
    value = variable(instance, "max_allowed_packet")
    assert value.isdigit() and int(value) == want, expect(
        f"max_allowed_packet={want} ({settings['max_allowed_packet']} in {layout.BAKED_SETTINGS})",
        value,
        VARS_HINT.format(name="max_allowed_packet"),
    )


def test_mysql_is_sized_to_the_instance_and_keeps_no_performance_schema(instance: Instance) -> None:
    sizing = instance.sizing()
    pool = variable(instance, "innodb_buffer_pool_size")
    assert pool == str(sizing["buffer_pool_mib"] << 20), expect(
        f"innodb_buffer_pool_size {sizing['buffer_pool_mib']} MiB for {sizing['mem_mib']} MiB of memory",
        pool,
        f"journalctl -u {layout.FIRSTBOOT_UNIT} (size_mysql_buffer_pool); mysqld-auto.cnf in the datadir",
    )
    schema = variable(instance, "performance_schema")
    assert schema.upper() in ("OFF", "0"), expect(
        "performance_schema=OFF", schema, VARS_HINT.format(name="performance_schema")
    )


def test_airflow_database_is_utf8mb4(instance: Instance) -> None:
    rows = instance.mysql(
        "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME "
        "FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'airflow'"
    )
    assert rows, expect("database `airflow`", "no such database", "mysql -e 'SHOW DATABASES'")
    charset, collation = rows[0]
    assert charset == "utf8mb4", expect(
        "database `airflow` with CHARACTER SET utf8mb4",
        f"{charset} / {collation}",
        "mysql -e 'SHOW CREATE DATABASE airflow'",
    )


def test_no_anonymous_users(instance: Instance) -> None:
    rows = instance.mysql("SELECT CONCAT(user, '@', host) FROM mysql.user WHERE user = ''")
    assert not rows, expect(
        "no anonymous MySQL accounts",
        [r[0] for r in rows],
        'mysql -e "SELECT user, host FROM mysql.user"',
    )


def test_no_test_database(instance: Instance) -> None:
    rows = instance.mysql(
        "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA "
        "WHERE SCHEMA_NAME = 'test' OR SCHEMA_NAME LIKE 'test\\_%'"
    )
    assert not rows, expect("no `test` database", [r[0] for r in rows], "mysql -e 'SHOW DATABASES'")


def test_root_is_socket_only(instance: Instance) -> None:
    rows = instance.mysql("SELECT host, plugin FROM mysql.user WHERE user = 'root'")
    bad = [f"root@{h} plugin={p}" for h, p in rows if h != "localhost" or p != "auth_socket"]
    assert rows and not bad, expect(
        "root only as root@localhost with the auth_socket plugin (no password)",
        bad or "no root account",
        "mysql -e \"SELECT user, host, plugin FROM mysql.user WHERE user='root'\"",
    )


def test_airflow_user_only_at_localhost(instance: Instance) -> None:
    rows = instance.mysql("SELECT host FROM mysql.user WHERE user = 'airflow'")
    hosts = sorted(r[0] for r in rows)
    assert hosts == ["localhost"], expect(
        "the `airflow` account only as airflow@localhost",
        hosts or "no airflow account",
        "mysql -e \"SELECT user, host FROM mysql.user WHERE user='airflow'\"",
    )


def test_airflow_user_grants_limited_to_airflow_db(instance: Instance) -> None:
    rows = instance.mysql("SHOW GRANTS FOR 'airflow'@'localhost'")
    grants = [r[0] for r in rows]
    wide = [g for g in grants if " ON *.* " in g and "USAGE" not in g.split(" ON ")[0]]
    assert not wide, expect(
        "airflow@localhost granted privileges on `airflow`.* only",
        wide,
        "mysql -e \"SHOW GRANTS FOR 'airflow'@'localhost'\"",
    )


def test_backup_account_is_read_only_and_passwordless(instance: Instance) -> None:
    account = f"'{layout.BACKUP_MYSQL_USER}'@'localhost'"
    rows = instance.mysql(
        f"SELECT plugin, authentication_string FROM mysql.user WHERE user = '{layout.BACKUP_MYSQL_USER}'"
    )
    assert rows == [["auth_socket", layout.AIRFLOW_USER]], expect(
        f"{account} authenticated by socket as the OS user {layout.AIRFLOW_USER} only",
        rows or "no such account",
        'mysql -e "SELECT user, host, plugin FROM mysql.user"',
    )
    grants = " ".join(r[0] for r in instance.mysql(f"SHOW GRANTS FOR {account}"))
    writes = [
        p for p in ("INSERT", "UPDATE", "DELETE", "DROP", "ALTER", "CREATE", "ALL PRIVILEGES") if p in grants
    ]
    assert "SELECT" in grants and "FLUSH_TABLES" in grants and not writes, expect(
        f"{account}: read the airflow database and FLUSH_TABLES (what mysqldump --single-transaction needs)",
        f"{grants} (writes: {writes})",
        f'mysql -e "SHOW GRANTS FOR {account}"',
    )
