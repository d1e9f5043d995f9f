"""Test doubles for the instance-side steps: settings.json as the host writes it, a recording Context."""

import functools
import socket

import boto3
from provisioning.shared import contract, layout
from provisioning.shared.runner import Context

from airflow_ami.settings import BakeSettings, load


@functools.cache
def _baked(os_name):
    return load(BakeSettings, cli={"os": os_name}).instance_view()


def baked_settings(os_name="debian", **over):
    """settings.json as the host renderer writes it for this OS profile, with overrides:
    the instance reads it through the contract, so a key it lacks is an error."""
    return contract.Settings({**_baked(os_name), **over})


def profile_facts(os_name):
    """The os_facts the host puts in settings.json for the OS profile."""
    return contract.OsFacts.from_settings(baked_settings(os_name))


class RecordingContext(Context):
    """A Context that records commands, file writes and removals instead of making them.

    Probes answer "not there" (rc 1) unless a test replaces ``probe``; ``run`` answers
    with ``run_output(argv)``, (0, "") unless a test replaces it.
    """

    def __init__(self, settings=None, *, dry_run=False, os_name="debian", adapter=None, state=None):
        facts = profile_facts(os_name)
        settings = baked_settings(os_name, **(settings or {}))
        super().__init__(settings, "/nonexistent/bundle", dry_run, adapter, facts=facts, state=state)
        self.commands = []
        self.written = {}
        self.removed = []
        self.run_output = lambda argv: (0, "")

    def run(self, argv, input_text=None, **kw):
        if self.dry_run:
            raise AssertionError(f"run() called in dry-run mode: {argv}")
        self.commands.append(list(argv))
        return self.run_output(argv)

    def probe(self, argv, **kw):
        return 1, ""

    def write_file(self, path, content, mode=0o644, owner=None, group=None, *, secret=False):
        self.would(f"write {path}")
        if not self.dry_run:
            self.written[path] = content
        return True

    def ensure_dir(self, path, mode=0o755, owner=None, group=None):
        return False

    def remove(self, path):
        self.would(f"remove {path}")
        if not self.dry_run:
            self.removed.append(path)
        return True


def make_bundle(root):
    """A bundle dir with a stand-in for every file the installer copies from files/."""
    files = root / "files"
    files.mkdir()
    for name, _, _ in layout.RENDERED_FILES:
        (files / name).write_text(f"# {name}\n")
    return root


def free_port():
    """A loopback TCP port nothing listens on (now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def aws_client(service, endpoint, region="eu-west-1", access_key="AKIDTESTTESTTEST", secret_key="secret"):
    """boto3 on the `endpoint` fixture's moto server."""
    return boto3.client(
        service,
        region_name=region,
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
    )
