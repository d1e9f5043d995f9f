"""The venv's spec stamp decides whether install rebuilds it."""

import json

import pytest
from provfakes import RecordingContext
from provisioning.bake import install
from provisioning.shared import airflowenv, layout

SETTINGS = {"airflow_version": "3.3.2", "extra_python_packages": ["b", "a"]}


@pytest.fixture
def venv(tmp_path, monkeypatch):
    monkeypatch.setattr(layout, "VENV_SPEC_STAMP", str(tmp_path / "stamp.json"))
    monkeypatch.setattr(layout, "AIRFLOW_BIN", str(tmp_path / "airflow"))
    monkeypatch.setattr(layout, "BUILD_DIR", str(tmp_path / "build"))
    (tmp_path / "airflow").write_text("")
    return tmp_path


def stamp(venv, spec):
    (venv / "stamp.json").write_text(json.dumps(spec, sort_keys=True) + "\n")


def test_spec_names_what_decides_the_venv(venv):
    spec = airflowenv.venv_spec(RecordingContext(SETTINGS), "3.12")
    assert spec == {
        "airflow_version": "3.3.2",
        "python": "3.12",
        "extras": ["a", "b"],
        "constraints_sha256": None,
        "providers": airflowenv.AIRFLOW_PROVIDERS,
        "airflow_extras": airflowenv.AIRFLOW_EXTRAS,
    }


def test_the_stamped_spec_is_current_also_after_cleanup_removed_the_constraints(venv):
    (venv / "build").mkdir()
    (venv / "build" / "constraints.txt").write_text("apache-airflow==3.3.2\n")
    ctx = RecordingContext(SETTINGS)
    built = airflowenv.venv_spec(ctx, "3.12")
    assert built["constraints_sha256"]
    assert not airflowenv.venv_is_current(built)  # no stamp yet
    stamp(venv, built)
    assert airflowenv.venv_is_current(built)
    (venv / "build" / "constraints.txt").unlink()
    after_cleanup = airflowenv.venv_spec(ctx, "3.12")
    assert airflowenv.venv_is_current(after_cleanup)
    assert after_cleanup["constraints_sha256"] is None  # the caller's spec is left as it was
    assert not airflowenv.venv_is_current(airflowenv.venv_spec(ctx, "3.13"))
    (venv / "airflow").unlink()
    assert not airflowenv.venv_is_current(built)


@pytest.mark.parametrize("step", [install.install_build_packages, install.install_airflow])
def test_a_step_works_out_the_python_and_the_spec_once(step, venv, monkeypatch):
    calls = []

    def wanted_python(ctx):
        calls.append("wanted_python")
        return airflowenv.PythonChoice("/usr/bin/python3", "3.12", True)

    monkeypatch.setattr(install, "wanted_python", wanted_python)
    ctx = RecordingContext(SETTINGS)
    stamp(venv, airflowenv.venv_spec(ctx, "3.12"))
    step(ctx)
    assert calls == ["wanted_python"]
    assert ctx.commands == []


@pytest.mark.parametrize(
    ("system", "asked", "chosen"),
    [
        ("3.10", "auto", ("3.12", False)),  # Airflow 3.3's providers need 3.11
        ("3.11", "auto", ("/usr/bin/python3", True)),
        ("3.14", "auto", ("/usr/bin/python3", True)),
        ("3.7", "auto", ("3.12", False)),  # Amazon Linux 2
        ("3.14", "3.12", ("3.12", False)),
    ],
)
def test_auto_takes_the_system_python_from_3_11_on(monkeypatch, system, asked, chosen):
    monkeypatch.setattr(airflowenv.os.path, "exists", lambda path: path == "/usr/bin/python3")
    monkeypatch.setattr(airflowenv, "python_minor", lambda python: system)
    choice = airflowenv.wanted_python(RecordingContext({"python_version": asked}))
    assert (choice.request, choice.system) == chosen
