"""Packages and versions: what settings.json asked for is what got installed."""

from __future__ import annotations

from typing import Any

from airflow_ami.driver.instance import (
    AIRFLOW_CLI,
    AIRFLOW_VENV_PYTHON,
    Instance,
    expect,
    layout,
    parse_version,
)

MIN_AUTO_PYTHON = (3, 11)
MIN_MYSQL = (8, 0)


def test_airflow_version(instance: Instance, settings: dict[str, Any]) -> None:
    res = instance.airflow("version")
    found = [ln.strip() for ln in res.stdout.splitlines() if ln.strip()]
    version = found[-1] if found else ""
    assert res.rc == 0 and version == settings["airflow_version"], expect(
        f"Airflow {settings['airflow_version']} (airflow_version in {layout.BAKED_SETTINGS})",
        f"`{AIRFLOW_CLI} version` exit {res.rc}: {version or res.stderr.strip()[-500:]}",
        f"{AIRFLOW_VENV_PYTHON} -m pip show apache-airflow; provisioning log of the bake",
    )


def test_python_version(instance: Instance, settings: dict[str, Any]) -> None:
    res = instance.sh(f"{AIRFLOW_VENV_PYTHON} -c 'import sys; print(\"%d.%d.%d\" % sys.version_info[:3])'")
    asked = str(settings["python_version"])
    found = parse_version(res.stdout) if res.rc == 0 else ()
    if asked == "auto":
        ok = found >= MIN_AUTO_PYTHON
        want = "Python >= 3.11 in the Airflow venv (python_version auto)"
    else:
        ok = found[:2] == parse_version(asked)[:2]
        want = f"Python {asked} in the Airflow venv (python_version in {layout.BAKED_SETTINGS})"
    assert ok, expect(
        want,
        f"{AIRFLOW_VENV_PYTHON}: {res.stdout.strip() or res.stderr.strip()[-300:]}",
        f"ls -l {AIRFLOW_VENV_PYTHON}; cat /opt/airflow/venv/pyvenv.cfg",
    )


def test_mysql_server_version(instance: Instance) -> None:
    rows = instance.mysql("SELECT VERSION(), @@version_comment")
    version, comment = rows[0][0], rows[0][1] if len(rows[0]) > 1 else ""
    assert "mariadb" not in (version + comment).lower(), expect(
        "MySQL (Airflow 3's scheduler breaks on MariaDB)",
        f"{version} ({comment})",
        f"systemctl status {instance.mysql_unit}; the OS package installed as MySQL",
    )
    assert parse_version(version) >= MIN_MYSQL, expect(
        "MySQL >= 8.0", version, f"systemctl status {instance.mysql_unit}"
    )


def test_mysql_provider_importable(instance: Instance) -> None:
    res = instance.sh(f"{AIRFLOW_VENV_PYTHON} -c 'import MySQLdb, airflow.providers.mysql; print(\"ok\")'")
    assert res.rc == 0 and "ok" in res.stdout, expect(
        "mysqlclient (MySQLdb) and apache-airflow-providers-mysql importable in the venv",
        res.stderr.strip()[-500:],
        f"{AIRFLOW_VENV_PYTHON} -m pip list | grep -i mysql",
    )


def test_the_image_leaves_out_what_no_role_uses_and_keeps_what_they_run(instance: Instance) -> None:
    """Docs, manuals, translations and MySQL's unused programs are not in the image, and a
    package update does not bring them back; the programs first boot and backups run are."""
    dirs = " ".join(layout.LEFT_OUT_DIRS)
    kept = " ".join(f"! -path '{k}'" for k in layout.LEFT_OUT_KEPT)
    files = " ".join(layout.LEFT_OUT_PATHS[len(layout.LEFT_OUT_DIRS) :])
    listing = f"find {dirs} -type f {kept} 2>/dev/null; ls -d {files} 2>/dev/null; true"
    found = instance.check(listing).split()
    assert found == [], expect("nothing under " + dirs + " but copyright files", found[:10], "cleanup's log")
    runs = instance.sh("for p in mysql mysqldump mysqladmin my_print_defaults; do command -v $p; done")
    config = instance.sh(f"ls {layout.DPKG_LEFT_OUT_CONFIG} {layout.RPM_LEFT_OUT_CONFIG} 2>/dev/null")
    assert runs.rc == 0 and len(runs.stdout.split()) == 4, expect(
        "the MySQL client, mysqldump, mysqladmin and my_print_defaults", runs.stdout, "cleanup's log"
    )
    assert config.stdout.strip(), expect("the package manager's left-out config", "none", "cleanup's log")
