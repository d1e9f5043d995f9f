import base64
import configparser
import subprocess
from urllib.parse import unquote, urlsplit

import pytest
from provisioning.shared.envfile import parse_env_text
from provisioning.shared.secretgen import (
    ALPHANUMERIC,
    alphanumeric,
    cfg_escape,
    env_file_line,
    fernet_key,
    sql_string,
    sqlalchemy_mysql_url,
)


def test_alphanumeric_secrets_use_only_letters_and_digits():
    for _ in range(50):
        value = alphanumeric(32)
        assert len(value) == 32
        assert set(value) <= set(ALPHANUMERIC)
        assert any(c.isdigit() for c in value)
        assert any(c.isupper() for c in value)
        assert any(c.islower() for c in value)


def test_alphanumeric_secrets_differ_between_calls():
    assert len({alphanumeric(24) for _ in range(100)}) == 100


def test_short_secrets_are_refused():
    with pytest.raises(ValueError):
        alphanumeric(8)


def test_fernet_key_is_urlsafe_base64_of_32_bytes():
    key = fernet_key()
    assert len(base64.urlsafe_b64decode(key)) == 32
    assert key != fernet_key()


def test_cfg_escape_doubles_percent_and_survives_configparser():
    raw = "a%b%%c%(x)s"
    parser = configparser.ConfigParser()
    parser.read_string(f"[core]\nvalue = {cfg_escape(raw)}\n")
    assert parser.get("core", "value") == raw


def test_sqlalchemy_url_encodes_credentials():
    password = "p@ss:w/rd%?#&"
    url = sqlalchemy_mysql_url("air flow", password, "airflow", unix_socket="/run/mysqld/mysqld.sock")
    parts = urlsplit(url)
    assert parts.scheme == "mysql+mysqldb"
    assert unquote(parts.username) == "air flow"
    assert unquote(parts.password) == password
    assert parts.hostname == "localhost"
    assert parts.path == "/airflow"
    assert "unix_socket=/run/mysqld/mysqld.sock" in parts.query
    assert "charset=utf8mb4" in parts.query


def test_sqlalchemy_url_with_port():
    url = sqlalchemy_mysql_url("airflow", "x", "airflow", host="127.0.0.1", port=3306)
    assert urlsplit(url).port == 3306


@pytest.mark.parametrize("value", ["plain", "mysql+mysqldb://a:b@localhost/x?c=1&d=2", "a=b="])
def test_env_file_line_reads_back_the_same_in_systemd_parser_and_sh(value):
    line = env_file_line("AIRFLOW__X__Y", value)
    assert parse_env_text(line) == {"AIRFLOW__X__Y": value}
    out = subprocess.run(
        ["sh", "-c", line + 'printf %s "$AIRFLOW__X__Y"'], capture_output=True, text=True, check=True
    ).stdout
    assert out == value


@pytest.mark.parametrize("value", ["it's", "new\nline", "back\\slash"])
def test_env_file_line_refuses_values_it_cannot_quote(value):
    with pytest.raises(ValueError):
        env_file_line("KEY", value)


def test_env_file_line_refuses_bad_names():
    with pytest.raises(ValueError):
        env_file_line("BAD-NAME", "x")


def test_sql_string_escapes_quotes_and_backslashes():
    assert sql_string("a'b\\c") == "'a''b\\\\c'"
