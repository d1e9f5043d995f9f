"""The running local cloud's state file, shared by separate `bake` invocations.

Layout (JSON): ``moto`` {pid, port}; ``instances`` {instance_id: record};
``ip_forward_before`` the sysctl value to restore; ``addresses`` {deployment:
{address, instance_id}}, each deployment's address and the instance holding it;
``worker_groups`` {group name: region}, the clusters' Auto Scaling groups in moto.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from airflow_ami.clouds.local.system import cache_dir


def state_path(root: Path | None = None) -> Path:
    return (root or cache_dir()) / "state.json"


def empty_state() -> dict[str, Any]:
    return {"moto": None, "instances": {}, "ip_forward_before": None, "addresses": {}, "worker_groups": {}}


def load_state(root: Path | None = None) -> dict[str, Any]:
    path = state_path(root)
    if not path.exists():
        return empty_state()
    data = json.loads(path.read_text())
    # Keys of older layouts are dropped, missing ones get their empty value.
    return {key: data.get(key, empty) for key, empty in empty_state().items()}


def save_state(state: dict[str, Any], root: Path | None = None) -> None:
    path = state_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


@contextlib.contextmanager
def locked_state(root: Path | None = None) -> Iterator[dict[str, Any]]:
    """Read-modify-write the state under an exclusive lock; saved on normal exit."""
    path = state_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = load_state(root)
        yield state
        save_state(state, root)
