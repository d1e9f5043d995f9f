"""`provision.py audit-config` (airflow-config-audit.service, started by its path unit when
anything under layout.ETC_AIRFLOW or layout.AUDITED_FILES changes): one journal line per
file added, removed or changed since the last run: its owner, mode and sha256, never its
contents. The first run of an instance logs every file: the trail's baseline.
"""

import hashlib
import json
import os

from ..shared import layout as L
from ..shared.runner import log


def snapshot(roots):
    """{path: "uid:gid mode sha256"} of every regular file under ``roots`` (files or dirs)."""
    found = {}
    for root in roots:
        paths = [root] if os.path.isfile(root) else []
        for dirpath, _, names in os.walk(root):
            paths += [os.path.join(dirpath, name) for name in names]
        for path in paths:
            try:
                st = os.lstat(path)
                with open(path, "rb") as handle:
                    digest = hashlib.sha256(handle.read()).hexdigest()
            except OSError:
                continue
            found[path] = "%d:%d %o %s" % (st.st_uid, st.st_gid, st.st_mode & 0o7777, digest)
    return found


def changes(before, after):
    """Lines saying what differs, by path."""
    lines = []
    for path in sorted(set(before) | set(after)):
        if path not in before:
            lines.append("added %s: %s" % (path, after[path]))
        elif path not in after:
            lines.append("removed %s (was %s)" % (path, before[path]))
        elif before[path] != after[path]:
            lines.append("changed %s: %s -> %s" % (path, before[path], after[path]))
    return lines


def main():
    try:
        with open(L.CONFIG_AUDIT_SNAPSHOT) as handle:
            before = json.load(handle)
    except (OSError, ValueError):
        before = {}
    after = snapshot([L.ETC_AIRFLOW, *L.AUDITED_FILES])
    for line in changes(before, after):
        log("config audit: " + line)
    tmp = L.CONFIG_AUDIT_SNAPSHOT + ".tmp"
    with open(tmp, "w") as handle:
        json.dump(after, handle, sort_keys=True)
    os.chmod(tmp, 0o600)
    os.replace(tmp, L.CONFIG_AUDIT_SNAPSHOT)
    return 0
