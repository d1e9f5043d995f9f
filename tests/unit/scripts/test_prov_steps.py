"""Steps against a recording context: which commands and files they would touch."""

import pytest
from provfakes import RecordingContext, baked_settings, make_bundle, profile_facts
from provisioning.bake import imagecheck, install, oskit
from provisioning.bake.oskit import Apt, Dnf
from provisioning.shared import layout
from provisioning.shared.mysqlctl import mysql_sql, wait_for_mysql
from provisioning.shared.runner import Context

OSES = ["debian", "amazon-linux-2", "amazon-linux-2023"]


def answer_probes(ctx, monkeypatch, rc):
    probes = []

    def probe(argv, **kw):
        probes.append(list(argv))
        return rc, ""

    monkeypatch.setattr(ctx, "probe", probe)
    return probes


def test_airflow_units_come_from_layout_alone():
    assert set(layout.UNITS) == {
        layout.FIRSTBOOT_UNIT,
        layout.FIRSTBOOT_ADMIN_UNIT,
        *layout.SERVICE_UNITS,
        layout.AIRFLOW_TARGET,
        *(job["timer"] for job in layout.HOUSEKEEPING),
        layout.SECRETS_REFRESH_TIMER,
        layout.METRICS_UNIT,
        layout.LEAVE_UNIT,
        layout.WORKLOAD["socket"],
        layout.CONFIG_AUDIT_PATH,
    }
    assert set(layout.SERVICE_UNITS) == {s["unit"] for s in layout.AIRFLOW_SERVICES}
    assert set(layout.UNIT_FILES) == {
        *layout.UNITS,
        *(job["unit"] for job in layout.HOUSEKEEPING),
        layout.SECRETS_REFRESH_UNIT,
        layout.WORKLOAD["unit"],
        layout.WORKLOAD["slice"],
        layout.CONFIG_AUDIT_UNIT,
    }
    assert {dest for _, dest, _ in layout.RENDERED_FILES} >= {
        layout.SYSTEMD_DIR + "/" + unit for unit in layout.UNIT_FILES
    }


def test_enable_airflow_units_enables_exactly_layouts_units(monkeypatch):
    ctx = RecordingContext()
    answer_probes(ctx, monkeypatch, 1)  # nothing enabled yet
    install.enable_airflow_units(ctx)
    assert ctx.commands == [["systemctl", "enable", unit] for unit in layout.UNITS]
    assert ctx.changed


def test_enabled_units_are_left_alone(monkeypatch):
    ctx = RecordingContext()
    probes = answer_probes(ctx, monkeypatch, 0)
    install.enable_airflow_units(ctx)
    assert ctx.commands == []
    assert not ctx.changed
    assert [p[-1] for p in probes] == list(layout.UNITS)


@pytest.mark.parametrize("os_name", OSES)
def test_stop_services_stops_the_target_the_services_then_mysql_and_redis(os_name, monkeypatch):
    ctx = RecordingContext(os_name=os_name)
    answer_probes(ctx, monkeypatch, 0)  # everything running
    imagecheck.stop_services(ctx)
    facts = profile_facts(os_name)
    units = [layout.AIRFLOW_TARGET, *layout.SERVICE_UNITS, facts.mysql_unit, facts.redis_unit]
    assert ctx.commands == [["systemctl", "stop", unit] for unit in units]


def test_stop_services_in_a_dry_run_only_describes(monkeypatch, capsys):
    ctx = RecordingContext(dry_run=True)
    answer_probes(ctx, monkeypatch, 0)
    imagecheck.stop_services(ctx)
    assert ctx.commands == []
    assert "[dry-run] would stop airflow.target" in capsys.readouterr().out


def test_mysql_sql_and_wait_use_the_socket_from_os_facts(monkeypatch):
    ctx = RecordingContext()
    ctx.facts = ctx.facts._replace(mysql_socket="/srv/mysql/custom.sock")
    mysql_sql(ctx, "SELECT 1;", quiet=True)
    assert ctx.commands[0][:4] == ["mysql", "--protocol=socket", "-S", "/srv/mysql/custom.sock"]
    probes = answer_probes(ctx, monkeypatch, 0)
    wait_for_mysql(ctx)
    assert probes == [
        ["mysqladmin", "--protocol=socket", "-S", "/srv/mysql/custom.sock", "-u", "root", "ping"]
    ]


@pytest.mark.parametrize(("os_name", "adapter"), [("debian", Apt({})), ("amazon-linux-2023", Dnf({}))])
def test_extra_ca_goes_to_the_anchor_and_clients_use_the_bundle_from_os_facts(
    os_name, adapter, tmp_path, monkeypatch
):
    for var in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "PIP_CERT"):
        monkeypatch.setenv(var, "unset")  # restored after the test: the step sets os.environ
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "extra-ca.pem").write_text("-----BEGIN CERTIFICATE-----\nMIIB\n")
    ctx = RecordingContext({"extra_ca_bundle": "files/extra-ca.pem"}, os_name=os_name, adapter=adapter)
    ctx.bundle = str(tmp_path)
    facts = profile_facts(os_name)
    install.trust_extra_ca_bundle(ctx)
    assert ctx.written[facts.ca_anchor].startswith(b"-----BEGIN CERTIFICATE-----")
    assert ctx.commands == [
        ["update-ca-certificates"] if os_name == "debian" else ["update-ca-trust", "extract"]
    ]
    assert any(
        facts.ca_bundle in str(content) for path, content in ctx.written.items() if path != facts.ca_anchor
    )
    assert ctx.env["SSL_CERT_FILE"] == ctx.env["PIP_CERT"] == facts.ca_bundle


@pytest.fixture
def bundle(tmp_path):
    return make_bundle(tmp_path)


@pytest.mark.parametrize("os_name", OSES)
def test_the_mysql_dropin_goes_where_os_facts_say_and_a_change_restarts_mysql(os_name, bundle, monkeypatch):
    ctx = RecordingContext(os_name=os_name, state=install.InstallState())
    ctx.bundle = str(bundle)
    install.write_mysql_dropin(ctx)
    facts = profile_facts(os_name)
    assert ctx.written == {
        facts.mysql_dropin: b"# mysql-airflow.cnf\n",
        f"/etc/systemd/system/{facts.mysql_unit}.d/airflow-ami.conf": b"# mysql-unit-airflow.conf\n",
    }
    assert ctx.state.restart_mysql
    assert ctx.commands == [["systemctl", "daemon-reload"]]  # the unit's drop-in is new
    ctx.commands.clear()
    answer_probes(ctx, monkeypatch, 0)  # enabled and running: restarted for the new drop-in
    install.start_mysql(ctx)
    assert ctx.commands == [["systemctl", "restart", facts.mysql_unit]]


def test_config_files_and_units_are_installed_from_layout_then_systemd_reloads(bundle):
    ctx = RecordingContext()
    ctx.bundle = str(bundle)
    install.install_config_files(ctx)
    placed = {layout.REDIS_UNIT_DROPIN: "/etc/systemd/system/redis-server.service.d/airflow-ami.conf"}
    expected = {
        placed.get(dest, dest)
        for _, dest, _ in layout.RENDERED_FILES
        if dest not in (layout.MYSQL_DROPIN, layout.MYSQL_UNIT_DROPIN)
    }
    assert set(ctx.written) == expected
    assert ctx.written[layout.AIRFLOW_CLI] == b"# airflow-cli.sh\n"
    assert ctx.commands == [["systemctl", "daemon-reload"]]


def test_a_missing_bundle_file_is_named(bundle):
    (bundle / "files" / "airflow.env").unlink()
    ctx = RecordingContext()
    ctx.bundle = str(bundle)
    with pytest.raises(install.StepFailed, match=r"bundle is missing files/airflow\.env"):
        install.install_config_files(ctx)


def test_the_baked_settings_leave_the_build_sources_out():
    settings = baked_settings(
        os_mirror="http://m/debian", index_url="https://u:tok@pypi/simple", api_port=8080
    )
    baked = install.baked_settings(dict(settings, extra_ca_bundle="files/extra-ca.pem"))
    assert (baked["os_mirror"], baked["index_url"], baked["extra_ca_bundle"]) == ("", "", "")
    assert baked["api_port"] == 8080
    kept = install.baked_settings(dict(settings, keep_build_sources=True))
    assert kept["index_url"] == settings["index_url"]


@pytest.mark.parametrize("os_name", ["debian", "amazon-linux-2023"])
def test_cleanup_removes_the_build_sources_unless_kept(os_name, tmp_path, monkeypatch):
    manager = profile_facts(os_name).package_manager
    ctx = RecordingContext(os_name=os_name, adapter=oskit.adapter_named(manager))
    anchor = tmp_path / "anchor.pem"
    anchor.write_text("cert")
    monkeypatch.setattr(ctx, "facts", ctx.facts._replace(ca_anchor=str(anchor)))
    forgotten = []
    monkeypatch.setattr(ctx.os, "forget_build_sources", forgotten.append)
    assert imagecheck.remove_build_sources(ctx) is None
    assert str(anchor) in ctx.removed and forgotten == [ctx]
    assert ctx.commands  # the trust store rebuilt without it
    kept = RecordingContext({"keep_build_sources": True}, os_name=os_name, adapter=ctx.os)
    assert imagecheck.remove_build_sources(kept) == "skipped"


def test_the_mirror_rewrite_is_undone_from_its_backup(tmp_path, monkeypatch):
    sources = tmp_path / "debian.sources"
    sources.write_text("URIs: http://deb.debian.org/debian\nSuites: sid\n")
    monkeypatch.setattr(oskit, "APT_SOURCES", (str(sources),))
    monkeypatch.setattr(layout, "SOURCES_BACKUP_DIR", str(tmp_path / "backup"))
    monkeypatch.setattr(oskit, "APT_CA_CONF", str(tmp_path / "80airflow-ami-ca"))
    ctx = Context({"os_mirror": "http://mirror.example/debian"}, None, False)
    apt = oskit.Apt({"ID": "debian"})
    assert apt.configure_mirror(ctx, "http://mirror.example/debian")
    assert "mirror.example" in sources.read_text()
    assert apt.build_source_leftovers(ctx) == [f"{sources} names http://mirror.example/debian"]
    apt.forget_build_sources(ctx)
    assert sources.read_text() == "URIs: http://deb.debian.org/debian\nSuites: sid\n"
    assert apt.build_source_leftovers(ctx) == []


def test_an_index_token_never_reaches_an_argument_or_a_log(monkeypatch, capsys):
    ctx = RecordingContext(
        {"index_url": "https://build:S3cr3tT0ken@pypi.example/simple", "uv_wheel_sha256": "0" * 64}
    )
    ctx.add_secret("S3cr3tT0ken")
    seen = []
    monkeypatch.setattr(ctx, "run", lambda argv, **kw: seen.append((argv, kw.get("env"))) or (0, ""))
    monkeypatch.setattr(install.os, "listdir", lambda d: ["uv-0.13.9-py3-none-any.whl"])
    monkeypatch.setattr(install, "check_uv_wheel", lambda wheel, expected: None)
    monkeypatch.setattr(install, "unpack_uv", lambda wheel, target: None)
    monkeypatch.setattr(install.tempfile, "mkdtemp", lambda **kw: "/nonexistent/scratch")
    monkeypatch.setattr(install.shutil, "rmtree", lambda path: None)
    install.download_uv(ctx, "0.13.9", "/nonexistent/uv")
    pip = next(argv for argv, env in seen if "download" in argv)
    assert not [a for a in pip if "S3cr3tT0ken" in a]
    assert next(env for argv, env in seen if "download" in argv)["PIP_INDEX_URL"].endswith(
        "@pypi.example/simple"
    )
    ctx.info("index is https://build:S3cr3tT0ken@pypi.example/simple")
    assert "S3cr3tT0ken" not in capsys.readouterr().out
