import pytest
from provfakes import profile_facts
from provisioning.bake.osdetect import (
    UnsupportedOS,
    detect_profile,
    is_debian_unstable,
    parse_os_release,
)
from provisioning.bake.oskit import ADAPTERS, Apt, Dnf, Yum, adapter_named

AL2 = """NAME="Amazon Linux"
VERSION="2"
ID="amzn"
ID_LIKE="centos rhel fedora"
VERSION_ID="2"
PRETTY_NAME="Amazon Linux 2"
"""
AL2023 = """NAME="Amazon Linux"
VERSION="2023"
ID="amzn"
ID_LIKE="fedora"
VERSION_ID="2023"
PLATFORM_ID="platform:al2023"
PRETTY_NAME="Amazon Linux 2023.6.20241121"
"""
BOOKWORM = """PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
"""
SID = """PRETTY_NAME="Debian GNU/Linux forky/sid"
NAME="Debian GNU/Linux"
VERSION_CODENAME=forky
ID=debian
"""
UBUNTU = """NAME="Ubuntu"
VERSION_ID="24.04"
ID=ubuntu
ID_LIKE=debian
PRETTY_NAME="Ubuntu 24.04.1 LTS"
"""


@pytest.mark.parametrize(
    ("text", "profile", "manager", "cls"),
    [
        (AL2, "amazon-linux-2", "yum", Yum),
        (AL2023, "amazon-linux-2023", "dnf", Dnf),
        (BOOKWORM, "debian", "apt", Apt),
        (SID, "debian", "apt", Apt),
    ],
)
def test_profile_and_adapter_from_os_release(text, profile, manager, cls):
    assert detect_profile(parse_os_release(text)) == profile
    assert profile_facts(profile).package_manager == manager
    adapter = adapter_named(manager, text)
    assert isinstance(adapter, cls)
    assert adapter.name == manager


def test_parse_handles_quotes_comments_and_blank_lines():
    fields = parse_os_release("# comment\n\nNAME=\"Amazon Linux\"\nID=amzn\nX='single q'\n")
    assert fields == {"NAME": "Amazon Linux", "ID": "amzn", "X": "single q"}


def test_unsupported_distribution_is_named():
    with pytest.raises(UnsupportedOS, match=r"Ubuntu 24\.04"):
        detect_profile(parse_os_release(UBUNTU))


def test_unknown_amazon_linux_version_is_refused():
    with pytest.raises(UnsupportedOS):
        detect_profile({"ID": "amzn", "VERSION_ID": "1"})


def test_unstable_detection():
    assert is_debian_unstable(parse_os_release(SID))
    assert not is_debian_unstable(parse_os_release(BOOKWORM))
    assert not is_debian_unstable(parse_os_release(AL2023))


def test_mysql_service_names_match_the_architecture_contract():
    assert profile_facts("debian").mysql_unit == "mysql.service"
    assert profile_facts("amazon-linux-2").mysql_unit == "mysqld.service"
    assert profile_facts("amazon-linux-2023").mysql_unit == "mysqld.service"


@pytest.mark.parametrize("profile", ["amazon-linux-2", "amazon-linux-2023", "debian"])
def test_each_profile_s_package_manager_has_an_adapter(profile):
    assert profile_facts(profile).package_manager in ADAPTERS
