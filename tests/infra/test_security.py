"""Security: secrets stay private, the API needs a login, first boot used IMDSv2."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from airflow_ami.driver.instance import (
    ADMIN_PASSWORD,
    AIRFLOW_CFG,
    AIRFLOW_UNITS,
    FIRSTBOOT_MARKER,
    FIRSTBOOT_UNIT,
    SECRETS_ENV,
    UNTRUSTED_DAG,
    Instance,
    expect,
    journal,
)
from airflow_ami.seam import layout
from tests.infra.untrusted import assert_reaches_no_secret, untrusted_task_reached


@pytest.mark.parametrize("path", [SECRETS_ENV, ADMIN_PASSWORD])
def test_secret_file_private(instance: Instance, path: str) -> None:
    res = instance.sh(f"stat -c '%a %U %G %F' {path}")
    assert res.rc == 0, expect(f"{path} present", res.stderr.strip(), journal(FIRSTBOOT_UNIT))
    mode, user, group, kind = res.stdout.split(" ", 3)
    assert (mode, user, kind.strip()) == ("600", "root", "regular file"), expect(
        f"{path}: regular file, mode 0600, owner root",
        f"mode 0{mode}, owner {user}:{group}, {kind.strip()}",
        f"ls -l {path}; the first-boot step that writes it ({journal(FIRSTBOOT_UNIT)})",
    )


@pytest.fixture(scope="module")
def leaks(instance: Instance) -> dict[str, Any]:
    return instance.probe("leaks")


def test_secrets_found_to_check(leaks: dict[str, Any]) -> None:
    keys = leaks["secret_keys"]
    assert len(keys) >= 3, expect(
        f"{SECRETS_ENV} holding the database URL, fernet key, JWT/API secrets",
        f"{len(keys)} secret values of 8+ characters: {keys}",
        f"the key names in {SECRETS_ENV}; {journal(FIRSTBOOT_UNIT)}",
    )


def _findings(leaks: dict[str, Any], prefix: str) -> list[str]:
    return [
        f"{f['where']} ({f.get('mode', '')}) leaks {f['keys']}"
        for f in leaks["findings"]
        if str(f["where"]).startswith(prefix)
    ]


def test_no_secret_in_world_readable_files(leaks: dict[str, Any]) -> None:
    found = [f for f in _findings(leaks, "file ") if not f.startswith(f"file {AIRFLOW_CFG}")]
    assert not found, expect(
        "no secret value in world-readable files under /etc, /opt/airflow, /var/lib/airflow-ami, /usr/local",
        found,
        f"the files named; secrets belong in {SECRETS_ENV} (0600) only",
    )


def test_no_secret_in_airflow_cfg(leaks: dict[str, Any]) -> None:
    found = _findings(leaks, f"file {AIRFLOW_CFG}")
    assert not found, expect(
        f"{AIRFLOW_CFG} free of secrets (they come from {SECRETS_ENV})",
        found,
        f"grep -n 'fernet_key\\|jwt_secret\\|secret_key\\|sql_alchemy_conn' {AIRFLOW_CFG}",
    )


def test_no_secret_in_journal(leaks: dict[str, Any]) -> None:
    found = _findings(leaks, "journal")
    assert not found, expect(
        "no secret value in the journal",
        found,
        "journalctl -o json | grep -c <value>; the unit that logged it "
        f"(first boot: {journal(FIRSTBOOT_UNIT, 200)})",
    )


def test_no_secret_in_process_arguments(leaks: dict[str, Any]) -> None:
    found = _findings(leaks, "process args")
    assert not found, expect(
        "no secret value in any process's arguments (ps -eo args)",
        found,
        "ps -eo pid,args; pass secrets through EnvironmentFile=, not the command line",
    )


def test_api_refuses_unauthenticated_call(instance: Instance) -> None:
    status, body = instance.api("GET", "/api/v2/dags?limit=1", auth=False)
    assert status in (401, 403), expect(
        "GET /api/v2/dags without a token -> 401 or 403",
        f"HTTP {status}: {str(body)[:200]}",
        "[core] auth_manager; [api] settings; " + journal("airflow-api-server.service"),
    )


def test_api_accepts_admin(instance: Instance, settings: dict[str, Any]) -> None:
    res = instance.probe("token-check")
    user = settings["admin_username"]
    assert res["status"] in (200, 201) and res["token_is_jwt"], expect(
        f"POST /auth/token as {user} (password from {ADMIN_PASSWORD}) -> a JWT",
        f"HTTP {res['status']} {res['error']} token={'yes' if res['has_token'] else 'no'}",
        f"{journal('airflow-api-server.service')}; the admin user made at first boot "
        f"({journal(FIRSTBOOT_UNIT)})",
    )
    assert res["authed_get_status"] == 200, expect(
        "GET /api/v2/dags with the admin's bearer token -> 200",
        res["authed_get_status"],
        journal("airflow-api-server.service"),
    )
    assert res["wrong_password_status"] in (401, 403), expect(
        "POST /auth/token with a wrong password -> 401 or 403",
        res["wrong_password_status"],
        "[core] auth_manager; " + journal("airflow-api-server.service"),
    )


def test_firstboot_used_imdsv2(instance: Instance) -> None:
    res = instance.sh(f"cat {FIRSTBOOT_MARKER}")
    assert res.rc == 0, expect(
        f"first-boot record {FIRSTBOOT_MARKER}", res.stderr.strip(), journal(FIRSTBOOT_UNIT, 200)
    )
    record: dict[str, Any] = json.loads(res.stdout)
    imds = {k: v for k, v in record.items() if "imds" in k.lower()}
    values = " ".join(str(v).lower() for v in imds.values())
    assert imds and ("2" in values or "token" in values), expect(
        f"{FIRSTBOOT_MARKER} recording IMDSv2 (token) use",
        imds or f"no imds key in {sorted(record)}",
        f"{journal(FIRSTBOOT_UNIT, 200)}; the instance metadata options (HttpTokens=required)",
    )


@pytest.mark.timeout(600)
def test_a_task_of_an_untrusted_author_reaches_no_secret(instance: Instance) -> None:
    instance.ensure_dags((UNTRUSTED_DAG,))
    assert_reaches_no_secret(untrusted_task_reached(instance, [instance]))


def test_the_kernel_profile_is_in_place_and_applied_where_the_kernel_is_the_instance_s(
    instance: Instance,
) -> None:
    profile = instance.read_text("/etc/sysctl.d/90-airflow-ami.conf")
    wanted = dict(
        (key.strip(), value.strip())
        for key, _, value in (line.partition("=") for line in profile.splitlines())
        if value and not key.startswith("#")
    )
    assert wanted.get("kernel.kptr_restrict") == "2" and wanted.get("fs.suid_dumpable") == "0", profile
    # A container shares its host's kernel (systemd-sysctl does not run there): only a
    # machine of its own has these values to check.
    if instance.sh("systemd-detect-virt --container").rc != 0:
        applied = {key: instance.check(f"sysctl -n {key}").strip() for key in wanted}
        differ = {key: (applied[key], value) for key, value in wanted.items() if applied[key] != value}
        assert not differ, expect(
            "every value of the profile applied", differ, "systemctl status systemd-sysctl"
        )
    blocked = instance.read_text("/etc/modprobe.d/airflow-ami.conf")
    assert all(f"install {module} /bin/false" in blocked for module in layout.UNUSED_PROTOCOLS), blocked


def test_no_airflow_process_may_dump_core(instance: Instance) -> None:
    units = [*AIRFLOW_UNITS, layout.WORKLOAD["unit"], FIRSTBOOT_UNIT, layout.FIRSTBOOT_ADMIN_UNIT]
    limits = {unit: instance.unit_props(unit, "LimitCORE")["LimitCORE"] for unit in units}
    assert set(limits.values()) == {"0"}, expect(
        "LimitCORE=0 on every Airflow unit", limits, "systemctl show"
    )


def test_a_change_under_etc_airflow_is_in_the_journal_without_its_contents(instance: Instance) -> None:
    probe = f"{layout.ETC_AIRFLOW}/audit-probe-{int(time.time())}"
    instance.check(f"umask 077 && echo do-not-log-me > {probe}")
    try:
        logged = ""
        for _ in range(30):
            logged = instance.check(
                f"journalctl -t airflow-config-audit --no-pager -n 50 | grep -F {probe} || true"
            )
            if logged:
                break
            time.sleep(1)
    finally:
        instance.check(f"rm -f {probe}")
    assert f"added {probe}: 0:0 600 " in logged, expect(
        f"one journal line for the new {probe}: owner, mode, sha256",
        logged or "nothing",
        f"systemctl status {layout.CONFIG_AUDIT_PATH} {layout.CONFIG_AUDIT_UNIT}",
    )
    assert "do-not-log-me" not in instance.check("journalctl -t airflow-config-audit --no-pager -n 200")
