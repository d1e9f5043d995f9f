"""Airflow's health read from this machine (launch's wait, status), against a real HTTP server."""

from __future__ import annotations

import http.server
import io
import json
import threading
from collections.abc import Iterator

import pytest

from airflow_ami import health
from airflow_ami.seam import layout

HEALTHY = {name: {"status": "healthy"} for name in layout.HEALTH_COMPONENTS}


@pytest.fixture
def api() -> Iterator[tuple[str, list[dict[str, object]]]]:
    """An HTTP server answering the health path with the next queued document (the last repeats)."""
    answers: list[dict[str, object]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != layout.HEALTH_PATH:
                self.send_error(404)
                return
            body = json.dumps(answers.pop(0) if len(answers) > 1 else answers[0]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", answers
    server.shutdown()


def test_waits_until_every_component_is_healthy(api: tuple[str, list[dict[str, object]]]) -> None:
    base, answers = api
    starting = {**HEALTHY, "scheduler": {"status": "unhealthy"}}
    answers += [starting, starting, HEALTHY]
    out = io.StringIO()
    assert health.wait_healthy(base, out, timeout=30, poll=0.01) == HEALTHY
    assert "scheduler unhealthy" in out.getvalue() and "Airflow healthy" in out.getvalue()
    assert out.getvalue().count("waiting for Airflow") == 1, "progress only when something changes"


def test_gives_up_naming_the_unhealthy_component_and_where_to_look(
    api: tuple[str, list[dict[str, object]]],
) -> None:
    base, answers = api
    answers.append({**HEALTHY, "dag_processor": {"status": "unhealthy"}})
    with pytest.raises(health.Unhealthy, match=r"dag_processor unhealthy.*journalctl"):
        health.wait_healthy(base, io.StringIO(), timeout=0.2, poll=0.05)


def test_no_answer_is_no_health() -> None:
    assert health.read("http://127.0.0.1:9", timeout=1) is None
    assert not health.is_healthy(None)
    assert set(health.components(None).values()) == {"no answer"}
