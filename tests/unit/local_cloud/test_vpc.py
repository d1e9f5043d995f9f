from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from airflow_ami.clouds.local import container, vpc
from airflow_ami.clouds.local.network import Slot
from airflow_ami.clouds.local.state import load_state
from airflow_ami.clouds.local.system import LocalCloudError

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


@pytest.fixture
def boot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., dict[str, Any]]:
    """boot_instance into tmp_path that stops at the table, touching nothing of the host.

    Returns what it saw: the records the table was written from, the state
    saved at that moment, the record destroyed after the failure.
    """
    seen: dict[str, Any] = {}

    def apply_vpc(records: Iterable[dict[str, Any]]) -> None:
        seen["records"], seen["saved"] = list(records), load_state(tmp_path)["instances"]
        raise RuntimeError("stop before anything exists")

    monkeypatch.setattr(container, "plan_dns", lambda: ([], None))
    monkeypatch.setattr(container, "free_slot", lambda taken: Slot(5))
    monkeypatch.setattr(container, "enable_ip_forward", lambda: "1")
    monkeypatch.setattr(container, "apply_vpc", apply_vpc)
    monkeypatch.setattr(container, "destroy_instance", lambda cache, rec: seen.setdefault("destroyed", rec))

    def run(**kw: Any) -> dict[str, Any]:
        with pytest.raises((RuntimeError, LocalCloudError)) as err:
            container.boot_instance(
                tmp_path,
                tmp_path / "image",
                ami_id="ami-1",
                region="us-east-1",
                public_key="ssh-ed25519 AAAA",
                ssh_user="admin",
                ssh_key_file="/k",
                aws_api_port=5000,
                instance_id="i-1",
                **kw,
            )
        seen["error"] = str(err.value)
        return seen

    return run


def test_boot_records_the_security_group_before_writing_the_table(
    boot: Callable[..., dict[str, Any]],
) -> None:
    seen = boot(cluster="airflow", sg_ports=[8793, 6379, 8080])
    booted = seen["saved"]["i-1"]
    assert (booted["cluster"], booted["sg_ports"], booted["ip"]) == ("airflow", SG_PORTS, Slot(5).guest_ip)
    assert seen["records"] == [booted]
    assert seen["destroyed"]["instance_id"] == "i-1"


def test_boot_refuses_bad_ports_before_recording_anything(
    boot: Callable[..., dict[str, Any]], tmp_path: Path
) -> None:
    seen = boot(sg_ports=[8080])
    assert "name the cluster" in seen["error"]
    assert "records" not in seen
    assert not (tmp_path / "state.json").exists()
