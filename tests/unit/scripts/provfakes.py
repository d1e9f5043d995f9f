"""Test doubles for the instance-side steps: facts from the profiles, a recording Context."""

from pathlib import Path

import yaml
from provisioning import layout
from provisioning.oskit import OsFacts
from provisioning.runner import Context

PROFILES = Path(__file__).resolve().parents[3] / "packer" / "profiles"


def profile_facts(os_name):
    """The os_facts the host puts in settings.json for packer/profiles/<os_name>.yaml."""
    return OsFacts.from_settings(yaml.safe_load((PROFILES / f"{os_name}.yaml").read_text()))


class RecordingContext(Context):
    """A Context that records commands, file writes and removals instead of making them.

    Probes answer "not there" (rc 1) unless a test replaces ``probe``; ``run`` answers
    with ``run_output(argv)``, (0, "") unless a test replaces it.
    """

    def __init__(self, settings=None, *, dry_run=False, os_name="debian", adapter=None, state=None):
        facts = profile_facts(os_name)
        settings = {"os_facts": facts._asdict(), **(settings or {})}
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
