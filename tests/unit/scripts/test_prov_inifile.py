import configparser

from provisioning.shared.inifile import get_option, set_options

CFG = """# generated
[core]
# how many tasks
parallelism = 16
executor = LocalExecutor

[api]
port = 8080
"""


def parse(text):
    parser = configparser.ConfigParser()
    parser.read_string(text)
    return parser


def test_replaces_in_place_and_keeps_comments():
    out = set_options(CFG, "core", {"parallelism": "8"})
    assert out.startswith("# generated\n[core]\n# how many tasks\nparallelism = 8\n")
    assert parse(out).get("core", "parallelism") == "8"
    assert parse(out).get("api", "port") == "8080"


def test_adds_missing_option_inside_its_section():
    out = set_options(CFG, "core", {"max_active_tasks_per_dag": "8"})
    cfg = parse(out)
    assert cfg.get("core", "max_active_tasks_per_dag") == "8"
    assert out.index("max_active_tasks_per_dag") < out.index("[api]")


def test_adds_missing_section():
    out = set_options(CFG, "scheduler", {"x": "1"})
    assert parse(out).get("scheduler", "x") == "1"
    assert parse(out).get("core", "parallelism") == "16"


def test_same_option_name_in_other_section_is_untouched():
    out = set_options(CFG, "core", {"port": "1"})
    assert parse(out).get("api", "port") == "8080"
    assert parse(out).get("core", "port") == "1"


def test_idempotent():
    once = set_options(CFG, "core", {"parallelism": "8", "new": "x"})
    assert set_options(once, "core", {"parallelism": "8", "new": "x"}) == once


def test_get_option():
    assert get_option(CFG, "core", "parallelism") == "16"
    assert get_option(CFG, "api", "parallelism") is None
    assert get_option("[core]\nfernet_key =\n", "core", "fernet_key") == ""
