"""What airflow.cfg must never hold: its secret options (install checks it, validate-image too)."""

from ..shared.inifile import get_option

SECRET_CFG_OPTIONS = [
    ("core", "fernet_key"),
    ("api_auth", "jwt_secret"),
    ("api", "secret_key"),
    ("webserver", "secret_key"),
    ("database", "sql_alchemy_conn"),
]


def airflow_cfg_secret_options(path):
    """Secret options that carry a value in airflow.cfg (pure apart from the read)."""
    with open(path) as fh:
        text = fh.read()
    return ["[%s] %s" % (s, o) for s, o in SECRET_CFG_OPTIONS if get_option(text, s, o)]
