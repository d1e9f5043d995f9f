"""First boot decides from what is on disk: secrets are never thrown away."""

import json

import pytest
from provfakes import RecordingContext
from provisioning.boot import firstboot
from provisioning.shared import layout
from provisioning.shared.secretgen import env_file_line, sqlalchemy_mysql_url

OLD = {
    "db_password": "OldDbPassw0rdOldDbPassw0rdOldDbP",
    "fernet_key": "b2xkLWZlcm5ldC1rZXktMDEyMzQ1Njc4OWFiY2RlZg==",
    "jwt_secret": "OldJwt" + "x" * 58,
    "api_secret_key": "OldApi" + "y" * 58,
    "admin_password": "OldAdminPassw0rd12345678",
}


@pytest.fixture
def disk(tmp_path, monkeypatch):
    for name in ("SECRETS_ENV", "ADMIN_PASSWORD_FILE", "FIRSTBOOT_MARKER"):
        monkeypatch.setattr(layout, name, str(tmp_path / name.lower()))
    return tmp_path


def write_secrets(secrets, fernet=None):
    url = sqlalchemy_mysql_url(
        "airflow", secrets["db_password"], "airflow", unix_socket="/run/mysqld/mysqld.sock"
    )
    with open(layout.SECRETS_ENV, "w") as fh:
        fh.write(env_file_line(firstboot.DB_URL_VARIABLE, url))
        fh.write(env_file_line("AIRFLOW__CORE__FERNET_KEY", fernet or secrets["fernet_key"]))
        fh.write(env_file_line("AIRFLOW__API_AUTH__JWT_SECRET", secrets["jwt_secret"]))
        fh.write(env_file_line("AIRFLOW__API__SECRET_KEY", secrets["api_secret_key"]))
    if "admin_password" in secrets:
        with open(layout.ADMIN_PASSWORD_FILE, "w") as fh:
            fh.write(secrets["admin_password"] + "\n")


def write_record(instance_id):
    with open(layout.FIRSTBOOT_MARKER, "w") as fh:
        json.dump({"instance_id": instance_id, "time": "2026-11-26T00:00:00Z"}, fh)


def boot(instance_id, known=True):
    """read_existing_secrets + decide_what_to_do + generate_secrets for this identity."""
    ctx = RecordingContext(state=firstboot.FirstbootState())
    ctx.state.instance_id, ctx.state.identity_known = (instance_id if known else None), known
    firstboot.read_existing_secrets(ctx)
    decision = firstboot.decide_what_to_do(ctx)
    if decision != "stop":
        firstboot.generate_secrets(ctx)
    return ctx, decision


def secrets_env_written(ctx):
    text = ctx.written[layout.SECRETS_ENV]
    text = text.decode() if isinstance(text, bytes) else text
    return {
        line.split("=", 1)[0]: line.split("=", 1)[1].strip("'") for line in text.splitlines() if "=" in line
    }


def test_a_fresh_image_makes_every_secret(disk):
    ctx, decision = boot("i-new")
    assert decision is None and ctx.state.mode == "complete"
    assert set(ctx.state.generated) == set(firstboot.ROLE_SECRETS["standalone"])
    assert not set(ctx.state.generated.values()) & set(OLD.values())


def test_the_same_instance_with_everything_in_place_does_nothing(disk):
    write_secrets(OLD)
    write_record("i-1")
    _, decision = boot("i-1")
    assert decision == "stop"


def test_imds_silent_at_a_later_boot_keeps_everything(disk):
    write_secrets(OLD)
    write_record("i-1")
    ctx, decision = boot(None, known=False)
    assert decision == "stop" and ctx.state.instance_id == "i-1"


def test_a_first_boot_killed_halfway_keeps_what_it_had_written(disk):
    partial = {k: v for k, v in OLD.items() if k != "admin_password"}
    write_secrets(partial)  # killed after secrets.env, before the admin password and the record
    ctx, decision = boot("i-1")
    assert decision is None and ctx.state.mode == "complete"
    assert {k: ctx.state.generated[k] for k in partial} == partial
    assert ctx.state.generated["admin_password"] not in OLD.values()


def test_a_new_identity_rotates_with_the_old_fernet_key_kept_behind(disk):
    write_secrets(OLD)
    write_record("i-origin")
    ctx, decision = boot("i-copy")
    assert decision is None and ctx.state.mode == "rotate"
    assert all(ctx.state.generated[k] != OLD[k] for k in OLD)
    assert ctx.state.old_fernet_keys == [OLD["fernet_key"]]
    firstboot.write_secrets_env(ctx)
    fernet = secrets_env_written(ctx)["AIRFLOW__CORE__FERNET_KEY"].split(",")
    assert fernet == [ctx.state.generated["fernet_key"], OLD["fernet_key"]]


def test_an_unfinished_rotation_is_finished_and_the_old_key_dropped(disk, monkeypatch):
    write_secrets(OLD, fernet="bmV3LWZlcm5ldC1rZXktMDEyMzQ1Njc4OWFiY2RlZg==," + OLD["fernet_key"])
    write_record("i-1")
    ctx, decision = boot("i-1")
    assert decision is None and ctx.state.mode == "complete"
    assert ctx.state.old_fernet_keys == [OLD["fernet_key"]]
    monkeypatch.setattr(firstboot, "service_env", lambda ctx: {})
    assert firstboot.reencrypt_with_the_new_fernet_key(ctx) is None
    assert ctx.commands[-1][-1] == "rotate-fernet-key"
    assert secrets_env_written(ctx)["AIRFLOW__CORE__FERNET_KEY"] == ctx.state.generated["fernet_key"]


def test_no_secret_reaches_the_log(disk, capsys):
    write_secrets(OLD)
    write_record("i-origin")
    boot("i-copy")
    out = capsys.readouterr().out
    assert not [value for value in OLD.values() if value in out]
