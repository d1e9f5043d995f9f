"""OpenPGP v4 fingerprints against gpg's, on the Debian archive keys of this machine; and
Oracle's MySQL key pinned by fingerprint before rpm or apt may trust it."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from provfakes import RecordingContext
from provisioning.bake import oskit, pgpkey
from provisioning.bake.oskit import Apt, Dnf, Yum
from provisioning.shared.runner import StepFailed

KEYRINGS = sorted(Path("/usr/share/keyrings").glob("debian-archive-*.gpg"))
ORACLE = "BCA43417C3B485DD128EC6D4B7B3B788A8D3785C"


def gpg(*args, stdin=None, home):
    return subprocess.run(
        ["gpg", "--homedir", str(home), "--batch", *args],
        input=stdin,
        capture_output=True,
        check=True,
    ).stdout


@pytest.fixture
def gpg_home(tmp_path):
    if shutil.which("gpg") is None:
        pytest.skip("gpg is needed to compare with")
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    return home


def gpg_fingerprints(path, home):
    """[(tag, fingerprint)] as gpg lists them: pub -> 6, sub -> 14."""
    out = gpg("--show-keys", "--with-colons", str(path), home=home).decode()
    result, kind = [], None
    for line in out.splitlines():
        fields = line.split(":")
        if fields[0] in ("pub", "sub"):
            kind = pgpkey.PUBLIC_KEY if fields[0] == "pub" else pgpkey.PUBLIC_SUBKEY
        elif fields[0] == "fpr" and kind:
            result.append((kind, fields[9]))
            kind = None
    return result


@pytest.fixture(params=KEYRINGS, ids=[p.name for p in KEYRINGS])
def keyring(request, gpg_home):
    expected = gpg_fingerprints(request.param, gpg_home)
    assert expected
    return request.param.read_bytes(), expected


def test_binary_keyrings_give_gpgs_fingerprints(keyring):
    data, expected = keyring
    assert pgpkey.fingerprints(data) == expected


def test_ascii_armor_gives_the_same_fingerprints(keyring, gpg_home):
    data, expected = keyring
    armored = gpg("--enarmor", stdin=data, home=gpg_home)
    assert b"\nComment: " in armored  # a header line, then the body, then the =XXXX checksum
    assert armored.splitlines()[-2].startswith(b"=")
    assert pgpkey.fingerprints(armored) == expected
    assert pgpkey.fingerprints(b"text before the armor\n" + armored.replace(b"\n", b"\r\n")) == expected


def new_format(data, five_octets=False):
    out = b""
    for tag, body in pgpkey.packets(data):
        n = len(body)
        if n < 192 and not five_octets:
            length = bytes([n])
        elif n < 8384 and not five_octets:
            length = bytes([((n - 192) >> 8) + 192, (n - 192) & 0xFF])
        else:
            length = b"\xff" + n.to_bytes(4, "big")
        out += bytes([0xC0 | tag]) + length + body
    return out


def old_format(data, length_type):
    out = b""
    items = list(pgpkey.packets(data))
    for i, (tag, body) in enumerate(items):
        # an indeterminate length can only be the last packet's
        kind = 2 if length_type == 3 and i < len(items) - 1 else length_type
        size = {0: 1, 1: 2, 2: 4, 3: 0}[kind]
        if size == 1 and len(body) > 0xFF:
            kind, size = 1, 2
        length = len(body).to_bytes(size, "big") if size else b""
        out += bytes([0x80 | tag << 2 | kind]) + length + body
    return out


@pytest.mark.parametrize(
    ("encode", "new"),
    [
        (new_format, True),
        (lambda d: new_format(d, five_octets=True), True),
        (lambda d: old_format(d, 0), False),
        (lambda d: old_format(d, 2), False),
        (lambda d: old_format(d, 3), False),
    ],
    ids=["new", "new-5-octet", "old-1-or-2-octet", "old-4-octet", "old-indeterminate"],
)
def test_old_and_new_packet_headers_read_alike(keyring, encode, new):
    data, expected = keyring
    recoded = encode(data)
    assert bool(recoded[0] & 0x40) is new
    assert pgpkey.fingerprints(recoded) == expected


def test_a_tampered_key_has_another_fingerprint(keyring):
    data, expected = keyring
    tag, body = next(pgpkey.packets(data))
    assert tag == pgpkey.PUBLIC_KEY
    offset = data.index(body) + len(body) // 2  # a byte of the primary key's material
    tampered = data[:offset] + bytes([data[offset] ^ 0x01]) + data[offset + 1 :]
    assert pgpkey.fingerprints(tampered)[0] != expected[0]
    assert pgpkey.fingerprints(tampered)[1:] == expected[1:]


@pytest.mark.parametrize(
    "bad",
    [b"", b"not a key", b"\x99\x01", b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmQ@@\n"],
    ids=["empty", "text", "truncated", "unterminated-armor"],
)
def test_what_is_not_a_key_is_refused(bad):
    if bad == b"":
        assert pgpkey.fingerprints(bad) == []
        return
    with pytest.raises(pgpkey.PgpError):
        pgpkey.fingerprints(bad)


def test_fingerprints_are_compared_without_case_or_spaces():
    assert pgpkey.normalize("bca4 3417 c3b4 85dd 128e  c6d4 b7b3 b788 a8d3 785c\n") == ORACLE


# --------------------------------------------------------------- the pinned MySQL key
@pytest.fixture
def debian_key(gpg_home):
    """A real key standing in for Oracle's: the archive's stable release key, armored."""
    path = next(p for p in KEYRINGS if p.name.endswith("-stable.gpg"))
    (_, fpr), *_ = gpg_fingerprints(path, gpg_home)
    return gpg("--enarmor", stdin=path.read_bytes(), home=gpg_home), fpr


def serve(monkeypatch, files):
    fetched = []

    def fetch_bytes(url):
        fetched.append(url)
        return files[url]

    monkeypatch.setattr(oskit, "fetch_bytes", fetch_bytes)
    return fetched


def test_the_pinned_key_is_accepted(debian_key, monkeypatch):
    key, fpr = debian_key
    serve(monkeypatch, {oskit.MYSQL_SIGNING_KEY_URL: key})
    spaced = " ".join(fpr[i : i + 4] for i in range(0, 40, 4)).lower()
    ctx = RecordingContext({"mysql_signing_key_fingerprint": spaced})
    assert oskit.fetch_mysql_signing_key(ctx) == (key, [fpr])


def test_another_key_fails_the_step_naming_expected_and_found(debian_key, monkeypatch):
    key, fpr = debian_key
    serve(monkeypatch, {oskit.MYSQL_SIGNING_KEY_URL: key})
    ctx = RecordingContext({"mysql_signing_key_fingerprint": ORACLE})
    with pytest.raises(StepFailed) as err:
        oskit.fetch_mysql_signing_key(ctx)
    assert str(err.value) == (
        f"{oskit.MYSQL_SIGNING_KEY_URL} holds key {fpr}, expected {ORACLE} "
        "(mysql_signing_key_fingerprint): Oracle's MySQL repository is not trusted"
    )


def test_a_keyring_with_an_extra_primary_key_is_refused(debian_key, monkeypatch):
    key, fpr = debian_key
    extra = next(p for p in KEYRINGS if p.name == "debian-archive-keyring.gpg").read_bytes()
    serve(monkeypatch, {oskit.MYSQL_SIGNING_KEY_URL: pgpkey.key_data(key) + extra})
    with pytest.raises(StepFailed, match="expected " + fpr):
        oskit.fetch_mysql_signing_key(RecordingContext({"mysql_signing_key_fingerprint": fpr}))


def test_apt_writes_no_keyring_and_no_source_for_a_wrong_key(debian_key, monkeypatch):
    key, _ = debian_key
    serve(monkeypatch, {oskit.MYSQL_SIGNING_KEY_URL: key})
    adapter = Apt({"ID": "debian", "VERSION_CODENAME": "bookworm"})
    ctx = RecordingContext({"mysql_signing_key_fingerprint": ORACLE}, adapter=adapter)
    with pytest.raises(StepFailed, match="expected " + ORACLE):
        adapter.install_mysql_server(ctx, "8.4")
    assert ctx.written == {}
    assert ctx.commands == []


def test_apt_trusts_the_pinned_key(debian_key, monkeypatch):
    key, fpr = debian_key
    serve(monkeypatch, {oskit.MYSQL_SIGNING_KEY_URL: key})
    adapter = Apt({"ID": "debian", "VERSION_CODENAME": "bookworm"})
    ctx = RecordingContext({"mysql_signing_key_fingerprint": fpr}, adapter=adapter)
    adapter.install_mysql_server(ctx, "8.4")
    assert ctx.written["/usr/share/keyrings/mysql-oracle.asc"] == key
    assert "bookworm mysql-8.4-lts" in ctx.written["/etc/apt/sources.list.d/mysql-oracle.list"]
    assert [argv[:2] for argv in ctx.commands] == [["apt-get", "-q"], ["apt-get", "-q"]]


def rpm_k(key_id, verdict="OK"):
    return (
        "mysql84-community-release-el9-1.noarch.rpm:\n"
        f"    Header V4 RSA/SHA256 Signature, key ID {key_id}: {verdict}\n"
        "    Header SHA256 digest: OK\n"
        "    Payload SHA256 digest: OK\n"
        f"    V4 RSA/SHA256 Signature, key ID {key_id}: {verdict}\n"
        "    MD5 digest: OK\n"
    )


@pytest.mark.parametrize("adapter", [Dnf({}), Yum({})], ids=["dnf", "yum"])
def test_rpm_installs_the_release_package_only_when_signed_by_the_pinned_key(
    adapter, debian_key, monkeypatch
):
    key, fpr = debian_key
    url = oskit.MYSQL_REPO_RPMS[("8.4", adapter.el)]
    fetched = serve(monkeypatch, {oskit.MYSQL_SIGNING_KEY_URL: key, url: b"the release rpm"})
    ctx = RecordingContext({"mysql_signing_key_fingerprint": fpr}, adapter=adapter)
    ctx.run_output = lambda argv: (0, rpm_k(fpr[-8:].lower())) if argv[:2] == ["rpm", "-Kv"] else (0, "")
    adapter.install_mysql_server(ctx, "8.4")
    package = os.path.join(oskit.L.BUILD_DIR, os.path.basename(url))
    key_file = os.path.join(oskit.L.BUILD_DIR, "RPM-GPG-KEY-mysql-2023")
    assert fetched == [oskit.MYSQL_SIGNING_KEY_URL, url]
    assert ctx.written == {key_file: key, package: b"the release rpm"}
    assert ctx.commands[:3] == [
        ["rpm", "--import", key_file],
        ["rpm", "-Kv", package],
        [adapter.tool, "-y", "-q", "install", package],
    ]
    assert ctx.commands[3][-1] == "mysql-community-server"


@pytest.mark.parametrize(
    ("rc", "output"),
    [
        (1, rpm_k("a8d3785c", "NOKEY")),
        (0, rpm_k("deadbeef")),  # signed, but by another key in the rpm database
        (0, "mysql84-community-release-el9-1.noarch.rpm:\n    Header SHA256 digest: OK\n"),  # unsigned
        (1, rpm_k("a8d3785c", "BAD")),
    ],
    ids=["key-missing", "other-key", "unsigned", "bad-signature"],
)
def test_rpm_refuses_a_release_package_not_signed_by_the_pinned_key(rc, output, monkeypatch):
    assert oskit.rpm_signed_by(0, rpm_k("a8d3785c"), [ORACLE])
    assert not oskit.rpm_signed_by(rc, output, [ORACLE])
    adapter = Dnf({})
    url = oskit.MYSQL_REPO_RPMS[("8.4", "el9")]
    monkeypatch.setattr(oskit, "fetch_mysql_signing_key", lambda ctx: (b"key", [ORACLE]))
    serve(monkeypatch, {url: b"the release rpm"})
    ctx = RecordingContext(adapter=adapter)
    ctx.run_output = lambda argv: (rc, output) if argv[:2] == ["rpm", "-Kv"] else (0, "")
    with pytest.raises(StepFailed, match="not signed by Oracle's pinned MySQL key"):
        adapter.install_mysql_server(ctx, "8.4")
    assert not any("install" in argv for argv in ctx.commands)
