"""Find and remove what the local cloud left on the host.

Everything of ours is recognisable without the state file: host objects are
named with PREFIX/NFT_PREFIX, processes carry MARKER_ENV in their environment.
The state file says which of them belong to a live cloud (moto kept between
`bake` invocations, launched instances); the rest is a killed run's leftovers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from airflow_ami.clouds.local import cgroups
from airflow_ami.clouds.local.container import destroy_instance, instances_dir, stop_process_now
from airflow_ami.clouds.local.network import (
    Slot,
    delete_link,
    delete_netns,
    delete_nft_table,
    list_netns,
    restore_ip_forward,
)
from airflow_ami.clouds.local.state import locked_state
from airflow_ami.clouds.local.system import (
    MARKER_ENV,
    NFT_PREFIX,
    PREFIX,
    log,
    pid_alive,
    run,
    safe_rmtree,
    stop_process,
)
from airflow_ami.clouds.local.vpc import apply_vpc


def our_processes() -> dict[int, str]:
    """pid -> marker tag (moto, imds:<id>, nspawn:<id>) of every process we started."""
    found = {}
    needle = f"{MARKER_ENV}=".encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        for entry in environ.split(b"\0"):
            if entry.startswith(needle):
                found[int(proc.name)] = entry[len(needle) :].decode(errors="replace")
    return found


def our_links() -> list[str]:
    data = json.loads(run(["ip", "-j", "link", "show"]).stdout or "[]")
    return [link["ifname"] for link in data if link["ifname"].startswith(PREFIX)]


def our_nft_tables() -> list[str]:
    out = run(["nft", "list", "tables"], check=False).stdout or ""
    names = [line.split()[-1] for line in out.splitlines() if line.startswith("table ip ")]
    return [n for n in names if n.startswith(NFT_PREFIX)]


def instance_is_live(record: dict[str, Any]) -> bool:
    owner = record.get("owner_pid")
    return pid_alive(record.get("nspawn_pid")) and (owner is None or pid_alive(owner))


def reap(cache: Path, everything: bool = False) -> list[str]:
    """Remove leftovers of killed runs (or, with everything=True, all of ours).

    Returns a description of what was removed.
    """
    removed: list[str] = []
    with locked_state(cache) as state:
        records = list(state["instances"].values())
    for record in records:
        if everything or not instance_is_live(record):
            removed.append(f"instance {record['instance_id']}")
            destroy_instance(cache, record)
    with locked_state(cache) as state:
        live = state["instances"]
        moto = state["moto"]
        if moto and (everything or not pid_alive(moto["pid"])):
            stop_process(moto["pid"])
            removed.append("moto")
            state["moto"] = moto = None
        keep_tags = {f"{kind}:{i}" for i in live for kind in ("imds", "nspawn", "init")}
        keep_pids = {moto["pid"]} if moto else set()
        removed += _reap_processes(keep_tags, keep_pids)
        slots = [Slot(rec["slot"]) for rec in live.values()]
        removed += _reap_host_objects(slots, {rec["machine"] for rec in live.values()})
        # Rewritten from the live records: a killed run's members leave it, and with
        # no instance left the table goes (teardown never leaves it behind).
        apply_vpc(live.values())
        removed += _reap_instance_dirs(cache, set(live))
        if not live:
            restore_ip_forward(state["ip_forward_before"])
            state["ip_forward_before"] = None
    for item in removed:
        log.info("reaped %s", item)
    return removed


def _reap_processes(keep_tags: set[str], keep_pids: set[int]) -> list[str]:
    removed = []
    for pid, tag in our_processes().items():
        if pid in keep_pids or tag in keep_tags:
            continue
        if tag.startswith("init:"):
            # A container's init outliving its nspawn: SIGKILL ends its whole PID namespace.
            stop_process_now(pid)
        else:
            stop_process(pid)
        removed.append(f"process {pid} ({tag})")
    return removed


def _reap_host_objects(live_slots: list[Slot], keep_machines: set[str]) -> list[str]:
    removed = []
    keep_tables = {s.nft_table for s in live_slots}
    for table in our_nft_tables():
        if table not in keep_tables:
            delete_nft_table(table)
            removed.append(f"nft table {table}")
    keep_links = {s.veth for s in live_slots}
    for link in our_links():
        if link not in keep_links:
            delete_link(link)
            removed.append(f"link {link}")
    for cgroup in cgroups.ours():
        if cgroup.name not in keep_machines and cgroups.remove(cgroup):
            removed.append(f"cgroup {cgroup}")
    keep_ns = {s.netns for s in live_slots}
    for ns in list_netns():
        if ns.startswith(PREFIX) and ns not in keep_ns:
            delete_netns(ns)
            removed.append(f"netns {ns}")
    return removed


def _reap_instance_dirs(cache: Path, live_ids: set[str]) -> list[str]:
    removed = []
    parent = instances_dir(cache)
    for home in parent.glob("*") if parent.exists() else []:
        if home.name not in live_ids:
            safe_rmtree(home)
            removed.append(f"instance dir {home}")
    return removed
