"""Read the KEY='value' files written for systemd EnvironmentFile= (pure)."""

import shlex


def parse_env_text(text):
    env = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        parts = shlex.split(value) if value else [""]
        env[key.strip()] = parts[0] if parts else ""
    return env


def read_env_file(path):
    with open(path) as fh:
        return parse_env_text(fh.read())
