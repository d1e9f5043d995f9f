"""The audit trail of the Airflow configuration: what changed, never what it holds."""

import json
import os

from provisioning.running import audit
from provisioning.shared import layout


def test_each_change_is_one_line_with_owner_mode_and_digest_never_the_contents(tmp_path, monkeypatch, caplog):
    etc = tmp_path / "etc-airflow"
    etc.mkdir()
    (etc / "secrets.env").write_text("AIRFLOW__CORE__FERNET_KEY='s3cret-value'\n")
    (etc / "role.env").write_text("A='1'\n")
    monkeypatch.setattr(layout, "ETC_AIRFLOW", str(etc))
    monkeypatch.setattr(layout, "AUDITED_FILES", (str(tmp_path / "sudoers"),))
    monkeypatch.setattr(layout, "CONFIG_AUDIT_SNAPSHOT", str(tmp_path / "snapshot.json"))
    lines = []
    monkeypatch.setattr(audit, "log", lines.append)
    assert audit.main() == 0
    assert sorted(line.split(":")[0] for line in lines) == ["config audit"] * 2
    assert all(line.startswith("config audit: added ") for line in lines)
    lines.clear()
    (etc / "secrets.env").write_text("AIRFLOW__CORE__FERNET_KEY='another-value'\n")
    os.chmod(etc / "role.env", 0o600)
    (etc / "new.conf").write_text("x")
    audit.main()
    assert [line.split()[3] for line in lines] == [
        str(etc / p) + ":" for p in ("new.conf", "role.env", "secrets.env")
    ]
    assert not any("value" in line for line in lines)
    assert oct(os.stat(tmp_path / "snapshot.json").st_mode & 0o777) == "0o600"
    assert set(json.loads((tmp_path / "snapshot.json").read_text())) == {
        str(etc / p) for p in ("new.conf", "role.env", "secrets.env")
    }
