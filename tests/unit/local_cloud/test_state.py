from __future__ import annotations

import json
from pathlib import Path

from airflow_ami.clouds.local import state


def test_missing_state_is_empty(tmp_path: Path) -> None:
    assert state.load_state(tmp_path) == state.empty_state()


def test_locked_state_round_trip(tmp_path: Path) -> None:
    with state.locked_state(tmp_path) as current:
        current["moto"] = {"pid": 1, "port": 2}
    assert state.load_state(tmp_path)["moto"] == {"pid": 1, "port": 2}


def test_unknown_keys_of_older_layouts_are_dropped(tmp_path: Path) -> None:
    state.state_path(tmp_path).write_text(json.dumps({"amis": {}, "instances": {"i-1": {}}}))
    loaded = state.load_state(tmp_path)
    assert set(loaded) == set(state.empty_state())
    assert loaded["instances"] == {"i-1": {}}
