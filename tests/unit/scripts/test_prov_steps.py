"""Steps against a recording context: which commands and files they would touch."""

import pytest
from provfakes import RecordingContext, profile_facts
from provisioning import imagecheck, install, layout
from provisioning.mysqlctl import mysql_sql, wait_for_mysql
from provisioning.oskit import Apt, Dnf

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
        *layout.SERVICE_UNITS,
        layout.AIRFLOW_TARGET,
        *(job["timer"] for job in layout.HOUSEKEEPING),
    }
    assert set(layout.SERVICE_UNITS) == {s["unit"] for s in layout.AIRFLOW_SERVICES}
    assert set(layout.UNIT_FILES) == {*layout.UNITS, *(job["unit"] for job in layout.HOUSEKEEPING)}
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
def test_stop_services_stops_the_target_the_services_then_mysql(os_name, monkeypatch):
    ctx = RecordingContext(os_name=os_name)
    answer_probes(ctx, monkeypatch, 0)  # everything running
    imagecheck.stop_services(ctx)
    units = [layout.AIRFLOW_TARGET, *layout.SERVICE_UNITS, profile_facts(os_name).mysql_unit]
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
    files = tmp_path / "files"
    files.mkdir()
    for name, _, _ in layout.RENDERED_FILES:
        (files / name).write_text(f"# {name}\n")
    return tmp_path


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
    expected = {
        dest
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
