"""Secret generation and the escaping rules that secrets must survive (pure)."""

import base64
import os
import secrets
import string

try:
    from urllib.parse import quote
except ImportError:  # pragma: no cover - Python 2 is not supported anyway
    raise

ALPHANUMERIC = string.ascii_letters + string.digits


def alphanumeric(length=32):
    """A random [A-Za-z0-9] string: safe in shells, URLs, SQL, cfg and env files."""
    if length < 16:
        raise ValueError("secrets shorter than 16 characters are not allowed")
    while True:
        value = "".join(secrets.choice(ALPHANUMERIC) for _ in range(length))
        # at least one of each class so any password policy (validate_password) accepts it
        if (
            any(c.islower() for c in value)
            and any(c.isupper() for c in value)
            and any(c.isdigit() for c in value)
        ):
            return value


def fernet_key():
    """A Fernet key: url-safe base64 of 32 random bytes (what cryptography expects)."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode("ascii")


def cfg_escape(value):
    """Escape a value for airflow.cfg (configparser interpolation): % -> %%."""
    return str(value).replace("%", "%%")


def sqlalchemy_mysql_url(user, password, database, *, unix_socket=None, host="localhost", port=None):
    """mysql+mysqldb URL with user and password URL-encoded."""
    netloc = "%s:%s@%s" % (quote(user, safe=""), quote(password, safe=""), host)
    if port:
        netloc += ":%d" % int(port)
    url = "mysql+mysqldb://%s/%s" % (netloc, quote(database, safe=""))
    query = ["charset=utf8mb4"]
    if unix_socket:
        query.append("unix_socket=" + quote(unix_socket, safe="/"))
    return url + "?" + "&".join(query)


def env_file_line(key, value):
    """KEY='value' understood identically by systemd EnvironmentFile= and POSIX sh."""
    if not key.replace("_", "").isalnum() or key[0].isdigit():
        raise ValueError("bad environment variable name %r" % key)
    value = str(value)
    if "'" in value or "\n" in value or "\\" in value:
        raise ValueError("value for %s cannot be quoted safely" % key)
    return "%s='%s'\n" % (key, value)


def sql_string(value):
    """A single-quoted SQL string literal (backslashes and quotes escaped)."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "''") + "'"
