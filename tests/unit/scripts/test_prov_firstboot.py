"""First boot decides from what is on disk: secrets are never thrown away."""

import json

import pytest
from provfakes import RecordingContext
from provisioning.boot import firstboot
from provisioning.shared import layout
from provisioning.shared.runner import StepFailed
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


class Database(RecordingContext):
    """MySQL answering the schema's revision; every other command recorded."""

    def __init__(self, revision, **kw):
        super().__init__(**kw)
        self.revision = revision
        self.inputs = []

    def run(self, argv, input_text=None, **kw):
        self.commands.append(list(argv))
        self.inputs.append(input_text)
        if argv[0] == "mysql":
            return (0, self.revision + "\n") if self.revision else (1, "ERROR 1146: no alembic_version")
        return 0, "schema migrated\n" if "-c" in argv else ""


@pytest.fixture
def baked(tmp_path, monkeypatch):
    for name in ("SCHEMA_REVISION_RECORD", "ADMIN_PENDING", "ADMIN_PASSWORD_FILE"):
        monkeypatch.setattr(layout, name, str(tmp_path / name.lower()))
    (tmp_path / "schema_revision_record").write_text("29ce7909c52b\n")
    return tmp_path


def airflow_processes(ctx):
    return [argv for argv in ctx.commands if argv[0] == layout.VENV + "/bin/python"]


def test_the_bake_s_schema_needs_no_airflow_process_at_first_boot(baked):
    ctx = Database("29ce7909c52b")
    firstboot.check_the_schema(ctx)
    assert airflow_processes(ctx) == [], "the revision alone says the schema is current"


@pytest.mark.parametrize("revision", ["", "1b2a3c4d5e6f"])
def test_a_schema_not_the_bake_s_is_migrated_before_any_service(baked, revision):
    ctx = Database(revision)
    firstboot.check_the_schema(ctx)
    ((_, flag, script),) = airflow_processes(ctx)
    assert flag == "-c" and script == firstboot.SCHEMA_SCRIPT


def test_first_boot_leaves_the_admin_to_its_unit_and_starts_it(baked):
    ctx = RecordingContext({"aws_endpoint_url": ""}, state=firstboot.FirstbootState())
    ctx.state.region = "eu-west-1"
    firstboot.leave_the_admin_to_its_unit(ctx)
    assert json.loads(ctx.written[layout.ADMIN_PENDING]) == {"region": "eu-west-1", "endpoint_url": ""}
    assert ctx.commands == [["systemctl", "restart", "--no-block", layout.FIRSTBOOT_ADMIN_UNIT]]


def test_the_admin_unit_sets_what_was_left_with_the_password_on_stdin_only(baked, monkeypatch):
    assert firstboot.admin_main(RecordingContext()) == 0, "nothing pending: nothing to do"
    (baked / "admin_pending").write_text(json.dumps({"region": "eu-west-1", "endpoint_url": ""}))
    (baked / "admin_password_file").write_text(OLD["admin_password"] + "\n")
    ctx = Database("29ce7909c52b", settings={"admin_username": "admin"})
    monkeypatch.setattr(firstboot, "service_env", lambda ctx: {})
    assert firstboot.admin_main(ctx) == 0
    ((argv, payload),) = [
        (a, i) for a, i in zip(ctx.commands, ctx.inputs, strict=True) if a[0] == layout.VENV + "/bin/python"
    ]
    assert argv[-1] == firstboot.ADMIN_SCRIPT and OLD["admin_password"] not in " ".join(argv)
    assert json.loads(payload) == {
        "username": "admin",
        "email": "admin@localhost",
        "password": OLD["admin_password"],
        "region": "eu-west-1",
        "endpoint_url": "",
    }
    assert ctx.removed == [layout.ADMIN_PENDING]


class RacingApiServer(Database):
    """The admin step's Airflow process losing FAB's permission sync to the API server's
    `races` times (or failing otherwise), then succeeding."""

    def __init__(self, races, failure="sqlalchemy.exc.IntegrityError: (1062, \"Duplicate entry '93-1'\")"):
        super().__init__("29ce7909c52b", settings={"admin_username": "admin"})
        self.races, self.failure = races, failure

    def run(self, argv, input_text=None, **kw):
        if argv[0] == layout.VENV + "/bin/python" and self.races:
            self.races -= 1
            self.commands.append(list(argv))
            raise StepFailed(f"command {argv[0]} exited 1:\n{self.failure}")
        return super().run(argv, input_text, **kw)


@pytest.fixture
def admin_pending(baked, monkeypatch):
    """What first boot leaves the admin unit, on a machine where no sleep waits."""
    (baked / "admin_pending").write_text(json.dumps({"region": "eu-west-1", "endpoint_url": ""}))
    (baked / "admin_password_file").write_text(OLD["admin_password"] + "\n")
    monkeypatch.setattr(firstboot, "service_env", lambda ctx: {})
    monkeypatch.setattr(firstboot.time, "sleep", lambda s: None)


@pytest.mark.parametrize("races", [1, 2])
def test_the_admin_step_tries_again_when_the_api_server_syncs_fab_s_permissions_at_once(admin_pending, races):
    """A boot's admin step lost the race once and failed: the dag-processor, which requires
    it, never started and the controller was never healthy."""
    ctx = RacingApiServer(races)
    assert firstboot.admin_main(ctx) == 0
    assert len(airflow_processes(ctx)) == races + 1 and ctx.removed == [layout.ADMIN_PENDING]


@pytest.mark.parametrize(
    ("races", "failure"),
    [(firstboot.ADMIN_ATTEMPTS, "sqlalchemy.exc.IntegrityError: 1062"), (1, "ModuleNotFoundError: fab")],
)
def test_the_admin_step_fails_on_another_error_or_a_race_that_does_not_end(admin_pending, races, failure):
    ctx = RacingApiServer(races, failure)
    assert firstboot.admin_main(ctx) != 0
    assert len(airflow_processes(ctx)) == races and ctx.removed == []
