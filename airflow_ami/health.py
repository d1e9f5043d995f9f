"""Airflow's health endpoint read from this machine: `launch` waits on it, `status` shows it."""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from typing import Any, TextIO

from airflow_ami.seam import layout

TIMEOUT = 900.0


class Unhealthy(RuntimeError):
    """Airflow did not report every component healthy in time; says where to look."""


def read(base: str, timeout: float = 5.0) -> dict[str, Any] | None:
    """The health document, or None when the API does not answer."""
    # A self-signed certificate is the instance's own: this machine has no copy to
    # verify it with, and the health document is public and carries no secret.
    context = ssl._create_unverified_context() if base.startswith("https:") else None
    try:
        with urllib.request.urlopen(base + layout.HEALTH_PATH, timeout=timeout, context=context) as response:
            return dict(json.loads(response.read()))
    except (OSError, ValueError, urllib.error.URLError):
        return None


def components(body: dict[str, Any] | None) -> dict[str, str]:
    """Each component Airflow must report, and its status ("no answer" without a body)."""
    return {
        name: str(((body or {}).get(name) or {}).get("status", "no answer"))
        for name in layout.HEALTH_COMPONENTS
    }


def is_healthy(body: dict[str, Any] | None) -> bool:
    return set(components(body).values()) == {"healthy"}


def wait_healthy(base: str, out: TextIO, timeout: float = TIMEOUT, poll: float = 1.0) -> dict[str, Any]:
    """Poll until every component is healthy, writing progress when it changes."""
    started = time.monotonic()
    last = ""
    while True:
        body = read(base)
        if is_healthy(body):
            out.write(f"launch: Airflow healthy at {base} after {time.monotonic() - started:.0f} s\n")
            return dict(body or {})
        now = ", ".join(f"{k} {v}" for k, v in components(body).items())
        if now != last:
            out.write(f"launch: waiting for Airflow at {base}: {now} ({time.monotonic() - started:.0f} s)\n")
            out.flush()
            last = now
        if time.monotonic() - started > timeout:
            raise Unhealthy(
                f"Airflow at {base} not healthy after {timeout:.0f} s ({now}); look at the instance:"
                f" `./bake ssh -- sudo journalctl -u {layout.FIRSTBOOT_UNIT} -u 'airflow-*' -n 100`"
            )
        time.sleep(poll)
