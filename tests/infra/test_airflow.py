"""Airflow: LocalExecutor on MySQL, database reachable, healthy, no examples."""

from __future__ import annotations

import json
from typing import Any

from airflow_ami.driver.instance import (
    AIRFLOW_CFG,
    AIRFLOW_CLI,
    AIRFLOW_ENV,
    AIRFLOW_UNITS,
    FANOUT_DAG,
    FIRSTBOOT_UNIT,
    HEALTH_PATH,
    SECRETS_ENV,
    Instance,
    expect,
    journal,
    layout,
)


def test_executor_is_local(instance: Instance) -> None:
    value = instance.airflow_config("core", "executor")
    assert value == "LocalExecutor", expect(
        "[core] executor = LocalExecutor",
        value,
        f"{AIRFLOW_CLI} config get-value core executor; {AIRFLOW_CFG}; {AIRFLOW_ENV}",
    )


def test_parallelism_allows_parallel_tasks(instance: Instance, settings: dict[str, Any]) -> None:
    value = instance.parallelism()
    asked = str(settings["parallelism"])
    hint = (
        f"{AIRFLOW_CLI} config get-value core parallelism; "
        f"AIRFLOW__CORE__PARALLELISM in {AIRFLOW_ENV}; [core] parallelism in {AIRFLOW_CFG}"
    )
    assert value >= 2, expect(
        "[core] parallelism >= 2 (LocalExecutor running tasks in parallel)",
        f"parallelism {value}: serial execution",
        hint,
    )
    if asked.isdigit():
        assert value == int(asked), expect(
            f"[core] parallelism = {asked} (parallelism in {layout.BAKED_SETTINGS})",
            f"parallelism {value}",
            hint,
        )


def test_api_server_workers_follow_the_instance_s_memory(instance: Instance) -> None:
    sizing = instance.sizing()
    value = instance.airflow_config("api", "workers")
    assert value == str(sizing["api_workers"]), expect(
        f"[api] workers = {sizing['api_workers']} for {sizing['cpus']} CPUs and {sizing['mem_mib']} MiB",
        value,
        f"journalctl -u {FIRSTBOOT_UNIT} (size_to_the_instance); [api] workers in {AIRFLOW_CFG}",
    )


def test_metadata_connection_is_mysql(instance: Instance) -> None:
    # Only the scheme leaves the instance: the URL carries the database password.
    res = instance.sh(
        f"{AIRFLOW_CLI} config get-value database sql_alchemy_conn 2>/dev/null "
        "| tail -n 1 | sed -e 's#://.*##'"
    )
    scheme = res.stdout.strip()
    assert scheme.startswith("mysql"), expect(
        "[database] sql_alchemy_conn with a mysql:// (mysql+mysqldb) URL",
        f"scheme {scheme!r}",
        f"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN in {SECRETS_ENV}",
    )


def test_airflow_db_check(instance: Instance) -> None:
    res = instance.airflow("db check")
    assert res.rc == 0, expect(
        f"`{AIRFLOW_CLI} db check` exit 0",
        f"exit {res.rc}: {(res.stderr or res.stdout).strip()[-800:]}",
        f"{journal(instance.mysql_unit)}; {SECRETS_ENV} (database URL)",
    )


def test_health_endpoint_healthy(instance: Instance) -> None:
    state = instance.wait_healthy(60)
    assert state["healthy"], instance.health_message(state, "a healthy instance")


def test_examples_not_loaded(instance: Instance) -> None:
    value = instance.airflow_config("core", "load_examples")
    assert value.lower() == "false", expect(
        "[core] load_examples = False",
        value,
        f"{AIRFLOW_CLI} config get-value core load_examples; {AIRFLOW_CFG}",
    )
    status, body = instance.api("GET", "/api/v2/dags?dag_id_pattern=example_&limit=5")
    found = [d.get("dag_id") for d in (body or {}).get("dags", [])] if status == 200 else body
    assert status == 200 and not found, expect(
        "no example DAGs registered",
        f"HTTP {status}: {found}",
        f"{AIRFLOW_CLI} dags list; {journal(AIRFLOW_UNITS[1])}",
    )


def test_components_point_at_local_api_server(instance: Instance) -> None:
    url = instance.airflow_config("core", "execution_api_server_url")
    port = instance.api_port
    # api_url: the API as this instance reaches it (127.0.0.1 unless api_host names an address).
    local = instance.settings["api_url"]
    ok = url == f"{local}/execution/" and local.endswith(f":{port}")
    assert ok, expect(
        f"[core] execution_api_server_url = {local}/execution/",
        url,
        f"{AIRFLOW_CLI} config get-value core execution_api_server_url; {AIRFLOW_ENV}",
    )


def test_health_path_served_without_auth(instance: Instance) -> None:
    status, _ = instance.api("GET", HEALTH_PATH, auth=False)
    assert status == 200, expect(
        f"GET {HEALTH_PATH} -> 200 without credentials",
        status,
        journal("airflow-api-server.service"),
    )


def test_sudo_finds_the_airflow_cli(instance: Instance, settings: dict[str, Any]) -> None:
    # Through sudo's secure_path, as a person types it (not the suite's own root shell).
    res = instance.host.run("sudo -n airflow version")
    lines = [ln.strip() for ln in res.stdout.splitlines() if ln.strip()]
    assert res.rc == 0 and lines and lines[-1] == settings["airflow_version"], expect(
        f"`sudo airflow version` to print {settings['airflow_version']}",
        f"exit {res.rc}: {(res.stderr or res.stdout).strip()[-300:]}",
        "sudo -l (secure_path); /etc/sudoers.d/airflow-ami",
    )


def test_cli_output_for_machines_is_only_the_value(instance: Instance) -> None:
    res = instance.airflow("config get-value core executor")
    assert res.rc == 0 and res.stdout == "LocalExecutor\n", expect(
        "`airflow config get-value core executor` to print exactly 'LocalExecutor' on stdout",
        f"exit {res.rc}, stdout {res.stdout[-500:]!r}",
        f"PYTHONWARNINGS in {AIRFLOW_CLI}; warnings belong on stderr or nowhere",
    )


def test_cli_json_output_parses(instance: Instance) -> None:
    instance.ensure_dags()
    res = instance.airflow(f"dags list-runs {FANOUT_DAG} -o json")
    try:
        runs = json.loads(res.stdout)
    except ValueError as exc:
        runs = exc
    assert res.rc == 0 and isinstance(runs, list), expect(
        f"`airflow dags list-runs {FANOUT_DAG} -o json` to print JSON and nothing else on stdout",
        f"exit {res.rc}: {runs!r}; stdout starts {res.stdout[:300]!r}",
        f"PYTHONWARNINGS in {AIRFLOW_CLI}",
    )
