from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

import pytest

from airflow_ami.localcloud import vpc
from airflow_ami.localcloud.network import Slot
from airflow_ami.localcloud.system import LocalCloudError

SG_PORTS = [6379, 8080, 8793]


def record(slot: int, cluster: str | None = None, sg_ports: list[int] | None = None) -> dict[str, Any]:
    """The fields of an instance record the VPC reads, as boot_instance stores them."""
    return {"slot": slot, "ip": Slot(slot).guest_ip, "cluster": cluster, "sg_ports": sg_ports or []}


SCENARIOS = {
    "no instances": [],
    "one lone instance": [record(0)],
    "a cluster of three": [record(i, "airflow", SG_PORTS) for i in range(3)],
    "two clusters and a lone instance": [
        record(0, "blue", [6379]),
        record(1, "blue", [6379]),
        record(2, "green", [8080]),
        record(3, "green", [8080]),
        record(4),
    ],
}


def rules(script: str) -> list[str]:
    """The per-cluster accept rules of the script."""
    return [line.strip() for line in script.splitlines() if "dport" in line]


def test_no_instances_only_removes_the_table() -> None:
    assert vpc.vpc_ruleset([]) == "table inet aa_vpc {}\ndelete table inet aa_vpc\n"


def test_a_lone_instance_reaches_no_other_instance() -> None:
    script = vpc.vpc_ruleset(SCENARIOS["one lone instance"])
    assert "ip saddr 10.213.0.0/16 ip daddr 10.213.0.0/16 jump between_instances" in script
    assert rules(script) == []
    assert script.endswith("    ct state established,related accept\n    drop\n  }\n}\n")


def test_a_cluster_opens_its_ports_between_its_members_only() -> None:
    assert vpc.vpc_ruleset(SCENARIOS["a cluster of three"]) == (
        "table inet aa_vpc {}\n"
        "delete table inet aa_vpc\n"
        "table inet aa_vpc {\n"
        "  chain forward {\n"
        "    type filter hook forward priority filter; policy accept;\n"
        "    ip saddr 10.213.0.0/16 ip daddr 10.213.0.0/16 jump between_instances\n"
        "  }\n"
        "  chain between_instances {\n"
        "    ct state established,related accept\n"
        "    ip saddr { 10.213.0.2, 10.213.0.6, 10.213.0.10 }"
        " ip daddr { 10.213.0.2, 10.213.0.6, 10.213.0.10 }"
        " tcp dport { 6379, 8080, 8793 } ct state new accept\n"
        "    drop\n"
        "  }\n"
        "}\n"
    )


def test_members_of_one_cluster_never_reach_the_other_clusters_ports() -> None:
    script = vpc.vpc_ruleset(SCENARIOS["two clusters and a lone instance"])
    assert rules(script) == [
        "ip saddr { 10.213.0.2, 10.213.0.6 } ip daddr { 10.213.0.2, 10.213.0.6 }"
        " tcp dport { 6379 } ct state new accept",
        "ip saddr { 10.213.0.10, 10.213.0.14 } ip daddr { 10.213.0.10, 10.213.0.14 }"
        " tcp dport { 8080 } ct state new accept",
    ]
    assert Slot(4).guest_ip not in script


def test_inbound_ports_are_the_destinations_own() -> None:
    controller, worker = record(0, "airflow", [6379, 8080]), record(1, "airflow", [8793])
    assert rules(vpc.vpc_ruleset([controller, worker])) == [
        "ip saddr { 10.213.0.2, 10.213.0.6 } ip daddr { 10.213.0.2 }"
        " tcp dport { 6379, 8080 } ct state new accept",
        "ip saddr { 10.213.0.2, 10.213.0.6 } ip daddr { 10.213.0.6 } tcp dport { 8793 } ct state new accept",
    ]


def test_the_script_does_not_depend_on_the_records_order() -> None:
    records = SCENARIOS["two clusters and a lone instance"]
    assert vpc.vpc_ruleset(reversed(records)) == vpc.vpc_ruleset(records)


def test_records_of_older_states_are_lone_instances() -> None:
    old = {"slot": 0, "ip": Slot(0).guest_ip}
    assert vpc.vpc_ruleset([old]) == vpc.vpc_ruleset(SCENARIOS["one lone instance"])


def nft() -> str:
    found = shutil.which("nft", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))
    if not found:
        pytest.fail("nft is not installed: the VPC rules cannot be checked (apt-get install nftables)")
    return found


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_nft_accepts_the_script(scenario: str) -> None:
    script = vpc.vpc_ruleset(SCENARIOS[scenario])
    # -c: the kernel checks the transaction and applies nothing.
    proc = subprocess.run([nft(), "-c", "-f", "-"], input=script, text=True, capture_output=True, check=False)
    assert proc.returncode == 0, f"nft -c rejected the script for {scenario}:\n{proc.stderr}\n{script}"


def test_ports_are_sorted_and_checked() -> None:
    assert vpc.security_group_ports("airflow", [8793, 6379, 8080, 6379]) == SG_PORTS
    assert vpc.security_group_ports(None, ()) == []
    with pytest.raises(LocalCloudError, match="1-65535"):
        vpc.security_group_ports("airflow", [0, 8080])
    with pytest.raises(LocalCloudError, match="name the cluster"):
        vpc.security_group_ports(None, [8080])
