from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from airflow_ami.clouds.local import container, network
from airflow_ami.clouds.local.network import Slot
from airflow_ami.clouds.local.system import LocalCloudError

IFNAMSIZ = 15


def test_slots_are_disjoint_slash30s() -> None:
    first, second = Slot(0), Slot(1)
    assert str(first.network) == "10.213.0.0/30"
    assert (first.host_ip, first.guest_ip) == ("10.213.0.1", "10.213.0.2")
    assert str(second.network) == "10.213.0.4/30"
    assert Slot(64).host_ip == "10.213.1.1"


def test_names_carry_the_prefix_and_fit_the_kernel_limit() -> None:
    slot = Slot(network.MAX_SLOTS - 1)
    for name in (slot.netns, slot.veth, slot.peer):
        assert name.startswith("aa-")
        assert len(name) <= IFNAMSIZ
    assert slot.nft_table.startswith("aa_")


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_dns_uses_reachable_host_resolvers(tmp_path: Path) -> None:
    resolv = write(tmp_path / "resolv.conf", "search x\nnameserver 10.0.0.53\nnameserver ::1\n")
    assert network.plan_dns(resolv, tmp_path / "none") == (["10.0.0.53"], None)


def test_dns_prefers_resolved_upstreams_over_its_stub(tmp_path: Path) -> None:
    resolv = write(tmp_path / "resolv.conf", "nameserver 127.0.0.53\n")
    upstream = write(tmp_path / "upstream.conf", "nameserver 192.0.2.53\n")
    assert network.plan_dns(resolv, upstream) == (["192.0.2.53"], None)


def test_dns_forwards_to_a_loopback_only_resolver(tmp_path: Path) -> None:
    resolv = write(tmp_path / "resolv.conf", "nameserver 127.0.0.1\n")
    servers, dnat_to = network.plan_dns(resolv, tmp_path / "none")
    assert (servers, dnat_to) == ([], "127.0.0.1")
    slot = Slot(3)
    assert network.instance_resolv_conf(slot, servers, dnat_to).endswith(f"nameserver {slot.host_ip}\n")
    rules = network.nft_ruleset(slot, dnat_to, 5000)
    assert f"dnat to {dnat_to}" in rules
    assert "udp dport 53" in rules and "tcp dport 53" in rules


def test_dns_without_any_nameserver_says_what_to_fix(tmp_path: Path) -> None:
    resolv = write(tmp_path / "resolv.conf", "# empty\n")
    with pytest.raises(LocalCloudError, match="nameserver"):
        network.plan_dns(resolv, tmp_path / "none")


def test_nat_masquerades_only_the_instance_subnet() -> None:
    slot = Slot(2)
    rules = network.nft_ruleset(slot, None, 5000)
    assert f"table ip {slot.nft_table}" in rules
    assert f"ip saddr {slot.network}" in rules and "masquerade" in rules
    assert "dport 53" not in rules


def test_every_instance_reaches_moto_at_one_address_that_no_slot_has() -> None:
    rules = network.nft_ruleset(Slot(2), None, 41234)
    assert f"ip daddr {network.AWS_API_ADDRESS} tcp dport 80 dnat to 127.0.0.1:41234" in rules
    slots = (Slot(i) for i in range(network.MAX_SLOTS))
    assert all(network.AWS_API_ADDRESS not in (s.host_ip, s.guest_ip) for s in slots)
    assert f"http://{network.AWS_API_ADDRESS}" == network.AWS_API_URL


def test_an_instance_s_name_files_are_world_readable_whatever_the_umask(tmp_path: Path) -> None:
    """apt resolves names as its _apt user: a resolv.conf of mode 600 left it no index."""
    (tmp_path / "etc").mkdir()
    previous = os.umask(0o077)
    try:
        container.prepare_rootfs(tmp_path, Slot(3), ["192.0.2.53"], None)
    finally:
        os.umask(previous)
    modes = {
        name: stat.S_IMODE((tmp_path / "etc" / name).stat().st_mode)
        for name in ("hostname", "hosts", "resolv.conf")
    }
    assert modes == dict.fromkeys(modes, 0o644)
    assert "nameserver 192.0.2.53" in (tmp_path / "etc/resolv.conf").read_text()


def test_an_instance_s_host_keys_are_read_from_its_own_files(tmp_path: Path) -> None:
    ssh = tmp_path / "etc/ssh"
    ssh.mkdir(parents=True)
    (ssh / "ssh_host_ed25519_key.pub").write_text("ssh-ed25519 AAAAC3Nza root@instance\n")
    (ssh / "ssh_host_ecdsa_key.pub").write_text("ecdsa-sha2-nistp256 AAAAE2Vj root@instance\n")
    (ssh / "ssh_host_ed25519_key").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    assert container.read_host_keys(tmp_path) == ["ecdsa-sha2-nistp256 AAAAE2Vj", "ssh-ed25519 AAAAC3Nza"]
