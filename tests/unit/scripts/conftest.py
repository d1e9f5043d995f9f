"""Make the instance-side code (scripts/, stdlib only) importable under the host Python;
moto's server for the tests whose code under test speaks HTTP to AWS itself."""

import sys
from pathlib import Path

import pytest
from moto import server as moto_server

SCRIPTS = Path(__file__).resolve().parents[3] / "scripts"
if str(SCRIPTS) not in sys.path:
    sys.path.insert(0, str(SCRIPTS))


@pytest.fixture(scope="module")
def endpoint():
    """moto's server on a free loopback port, for one test module."""
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()
