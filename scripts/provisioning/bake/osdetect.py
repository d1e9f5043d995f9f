"""Which OS profile is this?  Parsed from /etc/os-release text (pure)."""

import shlex


class UnsupportedOS(Exception):
    pass


def parse_os_release(text):
    """Parse os-release(5) text into a dict (quotes and escapes handled)."""
    result = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        try:
            parts = shlex.split(value)
        except ValueError:
            parts = [value.strip("\"'")]
        result[key.strip()] = parts[0] if parts else ""
    return result


def detect_profile(fields):
    """Map os-release fields to the OS profile they are (airflow_ami/settings/profiles/), or
    raise UnsupportedOS."""
    os_id = fields.get("ID", "").lower()
    version = fields.get("VERSION_ID", "")
    if os_id == "amzn":
        if version == "2":
            return "amazon-linux-2"
        if version.startswith("2023"):
            return "amazon-linux-2023"
        raise UnsupportedOS("Amazon Linux %r is not supported (2 or 2023)" % version)
    if os_id == "debian":
        return "debian"
    raise UnsupportedOS(
        "%s is not supported (Amazon Linux 2, Amazon Linux 2023, Debian)"
        % (fields.get("PRETTY_NAME") or os_id or "unknown OS")
    )


def is_debian_unstable(fields):
    """Debian testing/unstable have no VERSION_ID."""
    return fields.get("ID") == "debian" and not fields.get("VERSION_ID")
