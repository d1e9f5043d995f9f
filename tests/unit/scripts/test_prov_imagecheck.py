import pytest
from provfakes import RecordingContext
from provisioning.bake import imagecheck
from provisioning.bake.imagecheck import PACKER_SCRIPT, ROTATED_LOG
from provisioning.bake.oskit import ADAPTERS
from provisioning.shared import layout
from provisioning.shared.runner import Context, StepFailed


@pytest.mark.parametrize(
    ("name", "rotated"),
    [
        ("syslog", False),
        ("dpkg.log", False),
        ("error.log", False),
        ("syslog.1", True),
        ("dpkg.log.2.gz", True),
        ("eipp.log.xz", True),
        ("auth.log.old", True),
        ("messages-20261124", True),
    ],
)
def test_rotated_logs_are_recognised(name, rotated):
    assert bool(ROTATED_LOG.search(name)) is rotated


@pytest.mark.parametrize(
    ("name", "is_packer"),
    [
        ("script_4821.sh", True),
        ("script_.sh", False),
        ("myscript_1.sh", False),
        ("script_12.sh.bak", False),
    ],
)
def test_only_packers_running_script_is_tolerated_in_tmp(name, is_packer):
    assert bool(PACKER_SCRIPT.match(name)) is is_packer


@pytest.mark.parametrize("dry_run", [False, True])
def test_validate_image_checks_once_and_fails_only_for_real(dry_run, monkeypatch, capsys):
    calls = []

    def checks(ctx):
        calls.append(ctx)
        return [("ssh host keys removed", []), ("no shell history", ["/root/.bash_history"])]

    monkeypatch.setattr(imagecheck, "checks", checks)
    ctx = RecordingContext(dry_run=dry_run)
    if dry_run:
        imagecheck.validate_image(ctx)
    else:
        with pytest.raises(StepFailed, match="1 hygiene rule"):
            imagecheck.validate_image(ctx)
    assert calls == [ctx]
    out = capsys.readouterr().out
    assert "ok    ssh host keys removed" in out
    assert "FAIL  no shell history: /root/.bash_history" in out


@pytest.fixture
def used_machine(tmp_path, monkeypatch):
    """A tree holding what a booted build instance leaves: leases, cloud-init data, history, caches."""
    made = [
        "var/lib/dhcp/dhclient.eth0.leases",
        "var/lib/dhclient/dhclient--eth0.lease",
        "var/lib/cloud/data/instance-id",
        "var/lib/cloud/sem/config_scripts_user",
        "var/lib/dnf/history.sqlite",
        "var/lib/yum/history/2026-11-26/1/config-main",
        "root/.cache/pip/http/x",
        "root/.cache/uv/sdists/y",
    ]
    for rel in made:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    globs = tuple(str(tmp_path) + pattern for pattern in imagecheck.INSTANCE_STATE_GLOBS)
    monkeypatch.setattr(imagecheck, "INSTANCE_STATE_GLOBS", globs)
    hostname = tmp_path / "etc/hostname"
    hostname.parent.mkdir()
    hostname.write_text("ip-10-213-0-2\n")
    hostname.chmod(0o755)
    monkeypatch.setattr(imagecheck, "HOSTNAME_FILE", str(hostname))
    return tmp_path


def test_per_instance_state_and_the_hostname_are_found_and_cleaned(used_machine):
    found = imagecheck.instance_state_leftovers()
    assert len(found) == 7 and all(str(used_machine) in p for p in found)  # one /root/.cache
    assert imagecheck.hostname_problems() == [
        f"{used_machine}/etc/hostname holds 'ip-10-213-0-2'",
        f"{used_machine}/etc/hostname has mode 755",
    ]
    ctx = Context({}, None, False)  # acts for real, on the temporary tree
    imagecheck.remove_instance_state(ctx)
    imagecheck.reset_hostname(ctx)
    assert imagecheck.instance_state_leftovers() == []
    assert imagecheck.hostname_problems() == []
    assert ctx.changed


@pytest.fixture
def documented_machine(tmp_path, monkeypatch):
    """A tree with package docs, manuals, translations and MySQL's programs, used and unused."""
    for rel in (
        "usr/share/doc/mysql-server/copyright",
        "usr/share/doc/mysql-server/changelog.Debian.gz",
        "usr/share/doc/python3/README.gz",
        "usr/share/man/man1/mysql.1.gz",
        "usr/share/locale/locale.alias",
        "usr/share/locale/de/LC_MESSAGES/dpkg.mo",
        "usr/bin/perror",
        "usr/bin/mysqlbinlog",
        "usr/bin/mysql",
        "usr/bin/mysqldump",
    ):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    (tmp_path / "etc/dpkg/dpkg.cfg.d").mkdir(parents=True)
    dirs = tuple(str(tmp_path) + p for p in layout.LEFT_OUT_DIRS)
    monkeypatch.setattr(layout, "LEFT_OUT_DIRS", dirs)
    monkeypatch.setattr(
        layout, "LEFT_OUT_PATHS", dirs + tuple(str(tmp_path) + p for p in layout.LEFT_OUT_PATHS[4:])
    )
    monkeypatch.setattr(layout, "LEFT_OUT_KEPT", tuple(str(tmp_path) + p for p in layout.LEFT_OUT_KEPT))
    return tmp_path


def test_what_no_role_uses_is_found_removed_and_kept_out_of_package_updates(documented_machine, monkeypatch):
    root = documented_machine
    found = [p[len(str(root)) :] for p in imagecheck.left_out_leftovers()]
    assert found == [
        "/usr/bin/mysqlbinlog",
        "/usr/bin/perror",
        "/usr/share/doc/mysql-server/changelog.Debian.gz",
        "/usr/share/doc/python3/README.gz",
        "/usr/share/locale/de/LC_MESSAGES/dpkg.mo",
        "/usr/share/man/man1/mysql.1.gz",
    ]
    apt = ADAPTERS["apt"]("ID=debian\n")
    monkeypatch.setattr(apt, "left_out_config", str(root / "etc/dpkg/dpkg.cfg.d/airflow-ami-left-out"))
    imagecheck.leave_out_what_no_role_uses(Context({}, None, False, apt))  # acts for real, on the tree
    assert imagecheck.left_out_leftovers() == []
    kept = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert kept == [
        "etc/dpkg/dpkg.cfg.d/airflow-ami-left-out",
        "usr/bin/mysql",
        "usr/bin/mysqldump",
        "usr/share/doc/mysql-server/copyright",
        "usr/share/locale/locale.alias",
    ]
    assert not (root / "usr/share/doc/python3").exists() and (root / "usr/share/man").is_dir()
    excludes = (root / "etc/dpkg/dpkg.cfg.d/airflow-ami-left-out").read_text().splitlines()
    assert f"path-exclude={root}/usr/share/doc/*" in excludes
    assert f"path-exclude={root}/usr/bin/perror" in excludes
    assert excludes[-2:] == [f"path-include={p}" for p in layout.LEFT_OUT_KEPT]


def test_rpm_keeps_what_no_role_uses_out_by_netsharedpath(tmp_path, monkeypatch):
    dnf = ADAPTERS["dnf"]("ID=amzn\nVERSION_ID=2023\n")
    monkeypatch.setattr(dnf, "left_out_config", str(tmp_path / "macros.airflow-ami-left-out"))
    dnf.leave_out(Context({}, None, False, dnf), layout.LEFT_OUT_PATHS, layout.LEFT_OUT_KEPT)
    (line,) = (tmp_path / "macros.airflow-ami-left-out").read_text().splitlines()
    assert line.startswith("%_netsharedpath /usr/share/doc:/usr/share/man:")
    assert line.split(" ", 1)[1].split(":") == list(layout.LEFT_OUT_PATHS)
