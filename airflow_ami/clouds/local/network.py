"""Per-instance networking: netns, veth pair, private /30, NAT out, DNS.

Everything is configured from the host before the container boots: a
container joined to a ready-made namespace has no CAP_NET_ADMIN.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from airflow_ami.clouds.local.system import NFT_PREFIX, PREFIX, LocalCloudError, log, run

# Instances get 10.213.<n>.<m>/30 slots: host side .1, instance .2 of each.
SUBNET = ipaddress.IPv4Network("10.213.0.0/16")
IMDS_ADDRESS = "169.254.169.254"
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
# The AWS APIs (moto) as every instance reaches them, port 80, whatever moto's own
# port is this session: one address an image can keep (its aws_endpoint_url). It is
# the last slot's, which is never handed out.
AWS_API_ADDRESS = str(SUBNET.broadcast_address - 1)
AWS_API_URL = f"http://{AWS_API_ADDRESS}"
MAX_SLOTS = SUBNET.num_addresses // 4 - 1
# A deployment's address, the local cloud's Elastic IP: one of these, on the instance that
# serves the deployment now; moving it is a route and an address changing instance.
DEPLOYMENT_ADDRESSES = ipaddress.IPv4Network("10.214.0.0/24")


@dataclass(frozen=True)
class Slot:
    index: int

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network((int(SUBNET.network_address) + 4 * self.index, 30))

    @property
    def host_ip(self) -> str:
        return str(self.network.network_address + 1)

    @property
    def guest_ip(self) -> str:
        return str(self.network.network_address + 2)

    @property
    def netns(self) -> str:
        return f"{PREFIX}ns{self.index}"

    @property
    def veth(self) -> str:
        return f"{PREFIX}v{self.index}"

    @property
    def peer(self) -> str:
        return f"{PREFIX}p{self.index}"

    @property
    def nft_table(self) -> str:
        return f"{NFT_PREFIX}nat{self.index}"


def host_ipv4_addresses() -> set[str]:
    data = json.loads(run(["ip", "-j", "-4", "addr", "show"]).stdout or "[]")
    return {a["local"] for link in data for a in link.get("addr_info", [])}


def free_slot(taken: set[int]) -> Slot:
    """First slot neither recorded as ours nor colliding with an address on the host."""
    used = host_ipv4_addresses()
    existing = set(list_netns())
    for index in range(MAX_SLOTS):
        slot = Slot(index)
        if index in taken or slot.host_ip in used or slot.netns in existing:
            continue
        return slot
    raise LocalCloudError(f"no free address slot left in {SUBNET}: run `./bake teardown`")


def list_netns() -> list[str]:
    out = run(["ip", "netns", "list"]).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def parse_nameservers(resolv_conf: str) -> list[str]:
    servers = []
    for line in resolv_conf.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            servers.append(parts[1])
    return servers


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def plan_dns(
    host_resolv: Path = Path("/etc/resolv.conf"),
    resolved_upstream: Path = Path("/run/systemd/resolve/resolv.conf"),
) -> tuple[list[str], str | None]:
    """(nameservers for the instance, loopback resolver to DNAT to or None).

    A host resolver on 127.0.0.x is unreachable from the netns: prefer
    systemd-resolved's upstream list, else forward the instance's DNS to the
    loopback resolver through the veth (DNAT + route_localnet).
    """
    servers = [s for s in parse_nameservers(_read(host_resolv)) if ":" not in s]
    remote = [s for s in servers if not is_loopback(s)]
    if remote:
        return remote, None
    upstream = [s for s in parse_nameservers(_read(resolved_upstream)) if ":" not in s and not is_loopback(s)]
    if upstream:
        return upstream, None
    if servers:
        return [], servers[0]
    raise LocalCloudError(
        f"no IPv4 nameserver in {host_resolv}: configure the host's DNS before booting instances"
    )


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def instance_resolv_conf(slot: Slot, nameservers: list[str], dnat_to: str | None) -> str:
    servers = [slot.host_ip] if dnat_to else nameservers
    lines = ["# Written by the airflow-ami local cloud (the host's resolvers)."]
    lines += [f"nameserver {s}" for s in servers]
    return "\n".join(lines) + "\n"


def nft_ruleset(slot: Slot, dnat_to: str | None, aws_api_port: int) -> str:
    into = f'iifname "{slot.veth}" ip daddr'
    rules = [
        f"table ip {slot.nft_table} {{",
        "  chain postrouting {",
        "    type nat hook postrouting priority srcnat; policy accept;",
        f'    ip saddr {slot.network} oifname != "{slot.veth}" masquerade',
        "  }",
        "  chain prerouting {",
        "    type nat hook prerouting priority dstnat; policy accept;",
        f"    {into} {AWS_API_ADDRESS} tcp dport 80 dnat to 127.0.0.1:{aws_api_port}",
    ]
    if dnat_to:
        rules += [
            f"    {into} {slot.host_ip} udp dport 53 dnat to {dnat_to}",
            f"    {into} {slot.host_ip} tcp dport 53 dnat to {dnat_to}",
        ]
    rules += ["  }", "}"]
    return "\n".join(rules) + "\n"


def create_network(slot: Slot, dnat_to: str | None, aws_api_port: int) -> None:
    """netns + veth + addresses + route + NAT for one instance (host side does it all)."""
    ns = ["ip", "-n", slot.netns]
    run(["ip", "netns", "add", slot.netns])
    run(["ip", "link", "add", slot.veth, "type", "veth", "peer", "name", slot.peer])
    run(["ip", "link", "set", slot.peer, "netns", slot.netns])
    run([*ns, "link", "set", slot.peer, "name", "eth0"])
    run(["ip", "addr", "add", f"{slot.host_ip}/30", "dev", slot.veth])
    run(["ip", "link", "set", slot.veth, "up"])
    run([*ns, "link", "set", "lo", "up"])
    # The metadata service lives on the instance's own loopback, as on EC2's link-local.
    run([*ns, "addr", "add", f"{IMDS_ADDRESS}/32", "dev", "lo"])
    run([*ns, "addr", "add", f"{slot.guest_ip}/30", "dev", "eth0"])
    run([*ns, "link", "set", "eth0", "up"])
    run([*ns, "route", "add", "default", "via", slot.host_ip])
    # DNAT to loopback (moto, a loopback resolver) needs route_localnet: a per-interface
    # sysctl, it disappears with the veth, nothing to restore.
    Path(f"/proc/sys/net/ipv4/conf/{slot.veth}/route_localnet").write_text("1\n")
    nft_apply(nft_ruleset(slot, dnat_to, aws_api_port))
    log.info("network %s: host %s <-> instance %s", slot.netns, slot.host_ip, slot.guest_ip)


def nft_apply(ruleset: str) -> None:
    proc = _run_stdin(["nft", "-f", "-"], ruleset)
    if proc.returncode != 0:
        raise LocalCloudError(f"nft rejected our rules: {proc.stderr.strip()}")


def _run_stdin(cmd: list[str], text: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, input=text, text=True, capture_output=True, check=False)


def attach_address(slot: Slot, address: str) -> None:
    """`address` now reaches the instance of `slot` (from the host and through it)."""
    run(["ip", "-n", slot.netns, "addr", "replace", f"{address}/32", "dev", "eth0"])
    run(["ip", "route", "replace", f"{address}/32", "via", slot.guest_ip, "dev", slot.veth])


def detach_address(slot: Slot, address: str) -> None:
    """Undo attach_address; safe when the instance or its network is gone already."""
    run(["ip", "-n", slot.netns, "addr", "del", f"{address}/32", "dev", "eth0"], check=False)
    run(["ip", "route", "del", f"{address}/32", "via", slot.guest_ip], check=False)


def destroy_network(slot: Slot) -> None:
    """Undo create_network; safe on a half-made or already removed network."""
    delete_nft_table(slot.nft_table)
    delete_link(slot.veth)
    delete_netns(slot.netns)


def delete_nft_table(table: str) -> None:
    run(["nft", "delete", "table", "ip", table], check=False)


def delete_link(name: str) -> None:
    run(["ip", "link", "del", name], check=False)


def delete_netns(name: str) -> None:
    # Deleting the namespace also deletes the veth end inside it.
    run(["ip", "netns", "del", name], check=False)


def read_ip_forward() -> str:
    return IP_FORWARD.read_text().strip()


def enable_ip_forward() -> str:
    """Turn forwarding on; return the previous value so it can be restored."""
    before = read_ip_forward()
    if before != "1":
        IP_FORWARD.write_text("1\n")
    return before


def restore_ip_forward(before: str | None) -> None:
    if before is not None and read_ip_forward() != before:
        with contextlib.suppress(OSError):
            IP_FORWARD.write_text(before + "\n")
