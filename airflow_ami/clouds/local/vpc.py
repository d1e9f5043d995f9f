"""The VPC between instances: security groups for clusters, as EC2 has them.

Instances reach each other only through the host's forwarding, so one
nftables table of ours filters that: replies pass, a new TCP connection
passes when it goes to a port the destination's cluster opens (its
`sg_ports`) from another member of that cluster, anything else between
instances is dropped. Traffic to or from anything else (NAT out, SSH from
the host, DNS, IMDS, moto) is not touched.

It is one table for all instances, rewritten whole from the state's records:
a drop in any base chain on the forward hook drops whatever another table
accepted, so per-instance tables would each drop what the others let through.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from airflow_ami.clouds.local.network import SUBNET, nft_apply
from airflow_ami.clouds.local.system import NFT_PREFIX, LocalCloudError

VPC_TABLE = f"{NFT_PREFIX}vpc"
MAX_PORT = 65535


def security_group_ports(cluster: str | None, sg_ports: Iterable[int]) -> list[int]:
    """sg_ports checked and sorted, for an instance record; refused before anything exists."""
    ports = sorted(set(sg_ports))
    bad = [p for p in ports if not 1 <= p <= MAX_PORT]
    if bad:
        raise LocalCloudError(f"security group ports must be TCP ports (1-{MAX_PORT}), not {bad}")
    if ports and not cluster:
        raise LocalCloudError(f"ports {ports} open a cluster's security group: name the cluster")
    return ports


def vpc_ruleset(records: Iterable[Mapping[str, Any]]) -> str:
    """An `nft -f` script that replaces our table with the rules for these instances.

    Creating the table before deleting it makes the delete safe when it does
    not exist; the whole script is one transaction, so there is no moment
    without rules. With no instances the script only removes the table.
    """
    script = [f"table inet {VPC_TABLE} {{}}", f"delete table inet {VPC_TABLE}"]
    # Slot order is address order: the same records always give the same script.
    ordered = sorted(records, key=lambda record: record["slot"])
    if not ordered:
        return "\n".join(script) + "\n"
    members: dict[str, list[str]] = defaultdict(list)
    # Inbound rules belong to the destination's group: members opening the same
    # ports share one rule.
    opened: dict[tuple[str, tuple[int, ...]], list[str]] = defaultdict(list)
    for record in ordered:
        cluster = record.get("cluster")
        if not cluster:
            continue
        members[cluster].append(record["ip"])
        if record.get("sg_ports"):
            opened[cluster, tuple(sorted(record["sg_ports"]))].append(record["ip"])
    script += [
        f"table inet {VPC_TABLE} {{",
        "  chain forward {",
        "    type filter hook forward priority filter; policy accept;",
        f"    ip saddr {SUBNET} ip daddr {SUBNET} jump between_instances",
        "  }",
        "  chain between_instances {",
        "    ct state established,related accept",
    ]
    for (cluster, ports), destinations in sorted(opened.items()):
        script.append(
            f"    ip saddr {_set(members[cluster])} ip daddr {_set(destinations)}"
            f" tcp dport {_set(ports)} ct state new accept"
        )
    script += ["    drop", "  }", "}"]
    return "\n".join(script) + "\n"


def _set(items: Iterable[object]) -> str:
    return "{ " + ", ".join(map(str, items)) + " }"


def apply_vpc(records: Iterable[Mapping[str, Any]]) -> None:
    """Make our table match these instance records (all of them: it is rewritten whole)."""
    nft_apply(vpc_ruleset(records))
