"""`./bake bench`: the image's figures in the local cloud, each beside a baseline of the same run.

Bake, install method, boot, parallel efficiency, throughput, scheduling latency,
image size and memory are measured on this machine, and every figure that has a
baseline (plain pip, a first boot that migrates, parallelism 1, the standalone
instance) is measured in the same run, so a ratio holds on a noisy host. The
figures are not judged here: tests assert behaviour, this prints numbers.

The workloads run through the instance driver the verify suite uses
(airflow_ami/driver: its probe, its fan-out DAG); `0`-second sleepers are the
tiny tasks. Times come from Airflow's own task instance records.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from airflow_ami import health, lifecycle
from airflow_ami.builddir import BUILD_ROOT, BuildDir
from airflow_ami.clouds import InstanceRecord
from airflow_ami.clouds.local.cloud import local_images
from airflow_ami.clouds.local.container import INSTANCE_TYPE
from airflow_ami.clouds.local.system import cache_dir
from airflow_ami.driver import instance as driver
from airflow_ami.driver.instance import parse_ts
from airflow_ami.seam import layout
from airflow_ami.settings import REPO_ROOT, BakeSettings, LaunchSettings

BENCH_JSON = BUILD_ROOT / "bench.json"
# A provisioning step's closing line, as scripts/provisioning/shared/runner.py logs it.
STEP_RE = re.compile(r"<== (?P<step>\w+) \((?P<seconds>[\d.]+) s\)")
# The image's own wheel tags for a distribution built from source at bake time: a
# plain install needs the build packages the image no longer has, so it is left out.
LOCAL_BUILD_TAG_RE = re.compile(r"-linux_[a-z0-9_]+$")
MB = 1 << 20


@dataclasses.dataclass(frozen=True)
class Plan:
    """How big each workload is: --quick shrinks N and S, not what is measured."""

    fanout_tasks: int
    fanout_seconds: int
    tiny_tasks: int
    install_pins: int  # 0: every pin of the image's venv
    settle_seconds: int  # after healthy, before idle memory is read
    cluster_workers: int = 2
    # The cluster's fan-out is wider than one worker: twice its concurrency.
    worker_concurrency: int = 8

    @property
    def wide_fanout_tasks(self) -> int:
        return 2 * self.worker_concurrency


FULL = Plan(fanout_tasks=8, fanout_seconds=10, tiny_tasks=200, install_pins=0, settle_seconds=30)
QUICK = Plan(fanout_tasks=8, fanout_seconds=4, tiny_tasks=60, install_pins=40, settle_seconds=10)


# ---- pure figures (unit-tested) ----


def bake_steps(lines: list[str]) -> dict[str, float]:
    """Provisioning step -> seconds, from the build's output (a repeated step name adds up)."""
    steps: dict[str, float] = {}
    for line in lines:
        found = STEP_RE.search(line)
        if found:
            steps[found["step"]] = round(steps.get(found["step"], 0.0) + float(found["seconds"]), 2)
    return steps


def succeeded(task_instances: list[dict[str, Any]], task_id: str) -> list[dict[str, Any]]:
    return [t for t in task_instances if t["task_id"] == task_id and t["state"] == "success"]


def task_span(task_instances: list[dict[str, Any]], task_id: str) -> tuple[int, float]:
    """(how many `task_id` instances succeeded, first start to last end in seconds)."""
    done = succeeded(task_instances, task_id)
    if not done:
        return 0, 0.0
    ends = max(parse_ts(t["end_date"]) for t in done)
    return len(done), ends - min(parse_ts(t["start_date"]) for t in done)


def where_the_time_goes(task_instances: list[dict[str, Any]], task_id: str, seconds: int) -> dict[str, float]:
    """The span's overhead split: how far apart the tasks started, and how much longer than
    its S seconds a task ran (its own start-up and finish inside Airflow's record)."""
    done = succeeded(task_instances, task_id)
    starts = [parse_ts(t["start_date"]) for t in done]
    runs = [parse_ts(t["end_date"]) - parse_ts(t["start_date"]) for t in done]
    return {
        "fanout_start_spread_s": round(max(starts) - min(starts), 2) if starts else 0.0,
        "fanout_task_overhead_s": round(sum(runs) / len(runs) - seconds, 2) if runs else 0.0,
    }


def fanout_figures(parallel: float, serial: float, seconds: int) -> dict[str, float]:
    """efficiency = S / span (1.0: no overhead); speedup against parallelism 1."""
    return {
        "fanout_span_s": round(parallel, 2),
        "fanout_serial_span_s": round(serial, 2),
        "efficiency": round(seconds / parallel, 3) if parallel else 0.0,
        "speedup": ratio(serial, parallel),
    }


def tasks_per_min(count: int, span: float) -> float:
    return round(count * 60 / span, 1) if span else 0.0


def trigger_to_first_task(run: dict[str, Any], task_instances: list[dict[str, Any]]) -> float:
    """From the REST API trigger (the run's queued_at) to the first task's start."""
    first = min(parse_ts(t["start_date"]) for t in task_instances if t.get("start_date"))
    return round(first - parse_ts(run["queued_at"]), 2)


def tree_sizes(root: Path, depth: int = 3) -> dict[str, int]:
    """Bytes of regular files (a hard link once) under each path of `depth` components."""
    sizes: dict[str, int] = {}
    seen: set[tuple[int, int]] = set()
    for top, dirs, files in os.walk(root):
        rel = Path(top).relative_to(root).parts
        key = "/" + "/".join(rel[:depth])
        for name in files:
            st = os.lstat(os.path.join(top, name))
            if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            sizes[key] = sizes.get(key, 0) + st.st_size
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(top, d))]
    return sizes


def image_added(base: Mapping[str, int], image: Mapping[str, int], top: int = 8) -> dict[str, Any]:
    """MB the image adds over its base, and the paths that add (or take away) the most."""
    delta = {k: image.get(k, 0) - base.get(k, 0) for k in {*base, *image}}
    largest = sorted(delta.items(), key=lambda kv: -abs(kv[1]))[:top]
    return {
        "image_added_mb": round((sum(image.values()) - sum(base.values())) / MB, 1),
        "image_contributors_mb": {k: round(v / MB, 1) for k, v in largest},
    }


def ratio(a: float, b: float) -> float:
    return round(a / b, 2) if b else 0.0


# What the table shows: key, its baseline's key and their ratio's key (or ""), what it is.
TABLE = (
    ("bake_s", "", "", "whole build-ami --cloud local, cached base image"),
    ("install_uv_s", "install_pip_s", "install_ratio", "install_ratio = pip / uv"),
    ("boot_healthy_s", "boot_migrate_s", "boot_ratio", "boot_ratio = migrating boot / ours"),
    ("upgrade_downtime_s", "", "", "./bake upgrade: scheduler stopped to the new instance serving"),
    ("fanout_span_s", "fanout_serial_span_s", "speedup", "speedup = serial / parallel"),
    ("efficiency", "", "", "S / span of the fan-out (1.0: no overhead)"),
    ("fanout_start_spread_s", "", "", "first to last start of the fan-out's tasks"),
    ("fanout_task_overhead_s", "", "", "a fan-out task's run beyond its S seconds"),
    ("tiny_tasks_per_min", "", "", "no-op tasks, first start to last end"),
    ("trigger_to_first_task_s", "", "", "REST trigger to the first task's start"),
    ("api_calls_per_task", "", "", "execution API requests per tiny task (the API's access log)"),
    ("image_added_mb", "", "", "bytes over the base image"),
    ("idle_rss_mb", "", "", "Airflow services + MySQL, idle"),
    ("per_task_rss_mb", "", "", "added per running task"),
    (
        "cluster_tiny_tasks_per_min",
        "quota_tiny_tasks_per_min",
        "cluster_speedup",
        "cluster_speedup = cluster / standalone, same CPU quota per instance",
    ),
    (
        "cluster_fanout_span_s",
        "quota_fanout_span_s",
        "cluster_fanout_speedup",
        "cluster_fanout_speedup = standalone / cluster span, same quota",
    ),
)


def table(results: Mapping[str, Any]) -> str:
    lines = [f"{'figure':<28} {'value':>9} {'baseline':>9} {'ratio':>7}  what"]
    for key, base, ratio_key, what in TABLE:
        if key not in results and base not in results:
            continue
        value, baseline, shown = (results.get(k, "-") if k else "" for k in (key, base, ratio_key))
        lines.append(f"{key:<28} {value:>9} {baseline:>9} {shown:>7}  {what}")
    for path, mb in (results.get("image_contributors_mb") or {}).items():
        lines.append(f"  {path:<40} {mb:>9} MB")
    for unit, mb in (results.get("idle_rss_by_unit_mb") or {}).items():
        lines.append(f"  {unit:<40} {mb:>9} MB")
    for unit, seconds in (results.get("tiny_cpu_s_per_task") or {}).items():
        lines.append(f"  tiny task CPU: {unit:<31} {seconds:>9} s")
    for phase, seconds in (results.get("boot_phases") or {}).items():
        lines.append(f"  boot: {phase:<34} {seconds:>9} s")
    return "\n".join(lines) + "\n"


# ---- measuring an instance ----


class Tee(io.TextIOBase):
    """Writes through to `out` and keeps the lines (the build's output, for its steps)."""

    def __init__(self, out: TextIO) -> None:
        self.out, self.lines, self.partial = out, list[str](), ""

    def write(self, text: str) -> int:
        self.out.write(text)
        *whole, self.partial = (self.partial + text).split("\n")
        self.lines += whole
        return len(text)

    def flush(self) -> None:
        self.out.flush()


def driven(out: BuildDir, instance: InstanceRecord) -> driver.Instance:
    """The driver (probe, DAG upload, scheduler drop-ins) on `instance`."""
    return driver.Instance.of(instance, out.ssh_config, run_timeout=1800.0, recovery_timeout=300.0)


def healthy_at(base: str, timeout: float = 600.0) -> float:
    """The wall-clock time the health endpoint first reports every component healthy
    (launch's own wait, polled often enough for a boot time and not printed)."""
    health.wait_healthy(base, io.StringIO(), timeout=timeout, poll=0.5)
    return time.time()


def components_healthy_at(base: str, timeout: float = 600.0) -> dict[str, float]:
    """The wall-clock time each health component first reports healthy, and ("healthy") all
    of them, polled as healthy_at polls."""
    first: dict[str, float] = {}
    deadline = time.time() + timeout
    while True:
        body = health.read(base)
        now = time.time()
        for name, state in health.components(body).items():
            if state == "healthy":
                first.setdefault(name, now)
        if health.is_healthy(body):
            return {**first, "healthy": now}
        if now > deadline:
            raise BenchError(
                f"Airflow at {base} not healthy after {timeout:.0f} s: {health.components(body)}"
            )
        time.sleep(0.5)


def boot_phases(node: Any, healthy: Mapping[str, float]) -> dict[str, float]:
    """Seconds after the instance's PID 1 started: first boot's start and end, each service's
    start (its process) and each health component's first healthy answer."""
    units = [layout.FIRSTBOOT_UNIT, node.mysql_unit, *driver.AIRFLOW_UNITS]
    found = node.probe("boot-phases", *units)
    phases = {"first_boot_started": found["units"][layout.FIRSTBOOT_UNIT]["started"]}
    phases["first_boot_done"] = found["units"][layout.FIRSTBOOT_UNIT]["exited"]
    phases["mysql_active"] = found["units"][node.mysql_unit]["active"]
    for unit in driver.AIRFLOW_UNITS:
        phases[f"{unit.removesuffix('.service')}_started"] = found["units"][unit]["started"]
    for name, at in sorted(healthy.items(), key=lambda item: item[1]):
        phases[f"{name}_healthy" if name != "healthy" else "healthy"] = round(at - found["pid1_wall"], 2)
    return phases


def boot_started_at(node: Any) -> float:
    """When the instance's PID 1 started (wall clock): the container's start."""
    script = (
        "import os; t=int(open('/proc/1/stat').read().rsplit(')',1)[1].split()[19]);"
        "b=[int(l.split()[1]) for l in open('/proc/stat') if l.startswith('btime')][0];"
        "print(b + t / os.sysconf('SC_CLK_TCK'))"
    )
    return float(node.check(f"python3 -c {shlex.quote(script)}").strip())


def run_fanout(node: Any, n: int, seconds: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    run_id = node.trigger(driver.FANOUT_DAG, {"n": n, "seconds": seconds})
    done = node.wait_run(driver.FANOUT_DAG, run_id)
    if done["state"] != "success":
        raise BenchError(f"the fan-out run {run_id} ended {done['state']}: {node.run_summary(done)}")
    return done["run"], list(done["task_instances"])


class BenchError(RuntimeError):
    """A workload did not do what it must for its figure to mean anything."""


def memory(node: Any, seconds: float = 0) -> dict[str, Any]:
    """The Airflow services of a standalone instance, its workload server (started by the first
    workload: none while idle after boot), and MySQL."""
    return node.probe("memory", str(seconds), *driver.AIRFLOW_UNITS, layout.WORKLOAD["unit"], node.mysql_unit)


def measure_memory_and_fanout(node: Any, plan: Plan) -> dict[str, Any]:
    idle = memory(node)
    busy: dict[str, Any] = {}

    def sample() -> None:
        busy.update(memory(node, plan.fanout_seconds + 20))

    sampler = threading.Thread(target=sample)
    sampler.start()
    _, parallel_tis = run_fanout(node, plan.fanout_tasks, plan.fanout_seconds)
    sampler.join()
    with node.scheduler_env({"AIRFLOW__CORE__PARALLELISM": 1}):
        _, serial_tis = run_fanout(node, plan.fanout_tasks, plan.fanout_seconds)
    count, parallel = task_span(parallel_tis, "sleeper")
    serial_count, serial = task_span(serial_tis, "sleeper")
    if count != plan.fanout_tasks or serial_count != plan.fanout_tasks:
        raise BenchError(f"fan-out: {count} and {serial_count} of {plan.fanout_tasks} sleepers succeeded")
    return {
        **fanout_figures(parallel, serial, plan.fanout_seconds),
        **where_the_time_goes(parallel_tis, "sleeper", plan.fanout_seconds),
        "idle_rss_mb": round(idle["rss_mb"]),
        "idle_pss_mb": round(idle["pss_mb"]),
        "idle_rss_by_unit_mb": {u: round(v["rss_mb"]) for u, v in idle["units"].items()},
        # The memory the instance sized itself for (a local instance sees this host's).
        "sizing": node.sizing(),
        # PSS: a task's process shares the pages of the worker it forked from; RSS would
        # count those again for every task.
        "per_task_rss_mb": round((busy["pss_mb"] - idle["pss_mb"]) / plan.fanout_tasks, 1),
    }


def measure_wide_fanout(node: Any, plan: Plan) -> float:
    """Span of plan.wide_fanout_tasks sleepers of fanout_seconds each, first start to last end."""
    _, tis = run_fanout(node, plan.wide_fanout_tasks, plan.fanout_seconds)
    count, span = task_span(tis, "sleeper")
    if count != plan.wide_fanout_tasks:
        raise BenchError(f"wide fan-out: {count} of {plan.wide_fanout_tasks} sleepers succeeded")
    return span


# Where a standalone instance's CPU goes while tasks run: its services, the workloads (their
# slice: the server and every task's processes), MySQL.
def cpu_units(node: Any) -> list[str]:
    return [*driver.AIRFLOW_UNITS, layout.WORKLOAD["slice"], node.mysql_unit]


def cpu_per_task(before: Mapping[str, float], after: Mapping[str, float], tasks: int) -> dict[str, float]:
    """CPU-seconds per task each unit used between two samples."""
    return {unit: round((after[unit] - before[unit]) / tasks, 3) for unit in after} if tasks else {}


def measure_tiny(node: Any, plan: Plan, prefix: str = "") -> dict[str, Any]:
    since = time.time() - 1
    cpu_before = node.probe("cpu-seconds", *cpu_units(node)) if not prefix else {}
    run, tis = run_fanout(node, plan.tiny_tasks, 0)
    count, span = task_span(tis, "sleeper")
    figures = {f"{prefix}tiny_tasks_per_min": tasks_per_min(count, span)}
    if not prefix:
        figures["trigger_to_first_task_s"] = trigger_to_first_task(run, tis)
        # Every request a task makes goes to the execution API: its start, heartbeats, its end.
        calls = node.probe("api-calls", str(since))["execution_api_calls"]
        figures["api_calls_per_task"] = round(calls / len(tis), 1) if tis else 0.0
        cpu_after = node.probe("cpu-seconds", *cpu_units(node))
        figures["tiny_cpu_s_per_task"] = cpu_per_task(cpu_before, cpu_after, len(tis))
    return figures


PINS_SCRIPT = r"""
import importlib.metadata as m, json, re, sys
pins, built = [], []
for d in m.distributions():
    wheel = (d.read_text("WHEEL") or "").splitlines()
    tags = [l.split(":", 1)[1].strip() for l in wheel if l.startswith("Tag:")]
    pin = "%s==%s" % (d.metadata["Name"], d.version)
    (built if any(re.search(sys.argv[1], t) for t in tags) else pins).append(pin)
print(json.dumps({"pins": sorted(set(pins), key=str.lower), "built": sorted(built)}))
"""


# manylinux wheels as the image's uv download takes them (scripts/provisioning/bake/install.py).
UV_PLATFORM = {"x86_64": "x86_64-manylinux_2_17", "arm64": "aarch64-manylinux_2_17"}


def image_uv(settings: BakeSettings) -> Path:
    """The image's own uv (uv_version, its wheel checked against uv_wheel_sha256), fetched once
    with this checkout's uv into .cache/: the install figure is the pipeline's method."""
    target = REPO_ROOT / ".cache" / f"bench-uv-{settings.uv_version}-{settings.arch}"
    binary = target / "bin" / "uv"
    if binary.exists():
        return binary
    requirement = target.with_suffix(".txt")
    requirement.parent.mkdir(parents=True, exist_ok=True)
    requirement.write_text(f"uv=={settings.uv_version} --hash=sha256:{settings.uv_wheel_sha256}\n")
    here = shutil.which("uv", path=str(Path(sys.executable).parent))
    if not here:
        raise BenchError("no uv in this checkout's venv: run ./bake, which installs requirements.lock")
    command = [here, "pip", "install", "-q", "--target", str(target), "--require-hashes", "--no-deps"]
    command += ["--only-binary", ":all:", "--python-platform", UV_PLATFORM[settings.arch]]
    if settings.index_url:
        command += ["--default-index", settings.index_url]
    subprocess.run([*command, "-r", str(requirement)], check=True, env={**os.environ, "UV_NATIVE_TLS": "1"})
    return binary


def upload(instance: InstanceRecord, config: Path, local: Path, remote: str) -> None:
    """scp a file too big for a command line to the instance (its ssh user's own path)."""
    target = f"{instance.ssh_user}@{instance.address}:{remote}"
    subprocess.run(["scp", "-q", "-F", str(config), str(local), target], check=True, timeout=600)


def measure_install(
    node: Any, instance: InstanceRecord, settings: BakeSettings, plan: Plan
) -> dict[str, Any]:
    """The image's pins, uv (the pipeline's way) vs. plain pip, each into a fresh venv, no cache."""
    work = "/var/tmp/airflow-ami-bench"
    python = f"{layout.VENV}/bin/python"
    listing = f"{python} -c {shlex.quote(PINS_SCRIPT)} {shlex.quote(LOCAL_BUILD_TAG_RE.pattern)}"
    found = json.loads(node.check(listing))
    pins = found["pins"][: plan.install_pins or None]
    node.check(f"rm -rf {work} && mkdir -p {work}")
    config = BuildDir.of(settings).ssh_config
    upload(instance, config, image_uv(settings), "uv-for-bench")
    uploaded = f"~{instance.ssh_user}/uv-for-bench"
    node.check(f"install -m 0755 {uploaded} {work}/uv && rm -f {uploaded}")
    node.write_file(f"{work}/pins.txt", "".join(p + "\n" for p in pins).encode())
    index = settings.index_url
    env = "UV_NATIVE_TLS=1 UV_NO_PROGRESS=1 UV_LINK_MODE=copy PIP_DISABLE_PIP_VERSION_CHECK=1"
    if index:
        env += f" UV_DEFAULT_INDEX={shlex.quote(index)} PIP_INDEX_URL={shlex.quote(index)}"
    base = f"$({python} -c 'import sys; print(sys._base_executable)')"
    timed: dict[str, float] = {}
    try:
        for tool, install in (
            ("uv", f"{work}/uv pip install --no-cache --compile-bytecode --python {work}/uv-venv/bin/python"),
            ("pip", f"{work}/pip-venv/bin/pip install --no-cache-dir"),
        ):
            node.check(f"cd {work} && env {env} {work}/uv venv -q --seed --python {base} {work}/{tool}-venv")
            start = time.monotonic()
            node.check(f"cd {work} && env {env} {install} --no-deps -r pins.txt", look=f"{work}/pins.txt")
            timed[tool] = time.monotonic() - start
    finally:
        node.sh(f"rm -rf {work}")
    return {
        "install_uv_s": round(timed["uv"], 1),
        "install_pip_s": round(timed["pip"], 1),
        "install_ratio": ratio(timed["pip"], timed["uv"]),
        "install_pins": len(pins),
        "install_left_out": found["built"],
    }


def measure_boot_migrate(node: Any, base: str) -> float:
    """A first boot that has to migrate an empty schema: the database emptied, the
    first-boot record removed (secrets stay), then a reboot; container start to healthy."""
    node.check(f"systemctl stop {layout.AIRFLOW_TARGET}")
    node.mysql(
        "DROP DATABASE airflow; CREATE DATABASE airflow CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
    )
    node.check(f"rm -f {layout.FIRSTBOOT_MARKER}")
    node.request_reboot()
    time.sleep(5)
    ready = healthy_at(base, timeout=900)
    node.reset_connection()
    started = _retry(lambda: boot_started_at(node))
    boot_log = node.check(f"journalctl -b -u {layout.FIRSTBOOT_UNIT} --no-pager -o cat")
    if "schema migrated" not in boot_log:
        raise BenchError(f"the first boot after emptying the database did not migrate: {boot_log[-800:]}")
    return round(ready - started, 1)


def _retry(call: Callable[[], float], attempts: int = 20) -> float:
    for _ in range(attempts - 1):
        try:
            return call()
        except Exception:  # ssh may answer a little after the API
            time.sleep(3)
    return call()


def measure_image(settings: BakeSettings, ami_id: str) -> dict[str, Any]:
    images = local_images(cache_dir())
    bdir = BuildDir.of(settings)
    record = bdir.read(bdir.ami_record, "")
    image = Path(images[ami_id]["rootfs"])
    base = Path(images[record["source_ami"]]["rootfs"])
    return image_added(tree_sizes(base), tree_sizes(image))


# ---- the run ----


def stage(name: str, out: TextIO, timings: dict[str, float]) -> Any:
    return lifecycle.phase(name, timings, out, task="bench")


def bench(
    settings: BakeSettings,
    launching: LaunchSettings,
    quick: bool = False,
    on_launched: bool = False,
    out: TextIO = sys.stdout,
) -> dict[str, Any]:
    """Measure, print the table, write build/bench.json; returns what was written.

    on_launched: measure the instance `./bake launch` recorded (the test suite's
    rehearsal instance) and nothing else: no bake, launch, cluster or teardown.
    """
    plan = QUICK if quick else FULL
    results: dict[str, Any] = {}
    timings: dict[str, float] = {}
    bdir = BuildDir.of(settings)
    complete = False
    try:
        if on_launched:
            instance = lifecycle.launched(bdir)
        else:
            with stage("build-ami", out, timings):
                tee = Tee(out)
                record = lifecycle.build_image(settings, out=tee)
            results["bake_s"] = round(timings["build-ami"], 1)
            results["bake_steps"] = bake_steps(tee.lines)
            with stage("launch", out, timings):
                (instance,) = lifecycle.launch(launching, record["ami_id"], out, wait=False)
        node = driven(bdir, instance)
        base = lifecycle.image_of(settings, instance.ami_id).api_url(instance.address)
        healthy = components_healthy_at(base)
        if not on_launched:
            results["boot_healthy_s"] = round(healthy["healthy"] - boot_started_at(node), 1)
            results["boot_phases"] = boot_phases(node, healthy)
        with stage("image", out, timings):
            results.update(measure_image(settings, instance.ami_id))
        time.sleep(plan.settle_seconds)
        with stage("fan-out and memory", out, timings):
            results.update(measure_memory_and_fanout(node, plan))
        with stage("tiny tasks", out, timings):
            results.update(measure_tiny(node, plan))
        with stage("install", out, timings):
            results.update(measure_install(node, instance, settings, plan))
        with stage("boot with a migration", out, timings):
            results["boot_migrate_s"] = measure_boot_migrate(node, base)
        if "boot_healthy_s" in results:
            results["boot_ratio"] = ratio(results["boot_migrate_s"], results["boot_healthy_s"])
        node.cleanup()
        if not on_launched:
            lifecycle.teardown(settings)
            with stage("upgrade", out, timings):
                results.update(measure_upgrade(settings, launching, record["ami_id"], out))
            with stage("standalone with the cluster's CPU quota", out, timings):
                results.update(
                    measure_same_quota_standalone(settings, launching, record["ami_id"], plan, out)
                )
            with stage("cluster", out, timings):
                results.update(measure_cluster(launching, record["ami_id"], plan, out))
            results["cluster_speedup"] = ratio(
                results["cluster_tiny_tasks_per_min"], results["quota_tiny_tasks_per_min"]
            )
            results["cluster_fanout_speedup"] = ratio(
                results["quota_fanout_span_s"], results["cluster_fanout_span_s"]
            )
        complete = True
    finally:
        if not on_launched:
            lifecycle.teardown(settings)
        # What was measured is kept even when a later stage failed (a full run is long),
        # and a run that measured nothing leaves the last bench.json as it was.
        document = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine(),
            "mode": "quick" if quick else "full",
            "on_launched": on_launched,
            "complete": complete,
            "plan": dataclasses.asdict(plan),
            "stages_s": {k: round(v, 1) for k, v in timings.items()},
            "cpu_quota": {
                "percent": 0 if on_launched else cpu_quota_for(plan),
                "per": "instance (controller, each worker, and the standalone baseline)",
                "host_cpus": os.cpu_count(),
                "instance_type": INSTANCE_TYPE,
                "figures": [k for k in QUOTA_FIGURES if k in results],
            },
            "figure_conditions": conditions(results, cpu_quota_for(plan)),
            **results,
        }
        if results:
            BENCH_JSON.parent.mkdir(parents=True, exist_ok=True)
            BENCH_JSON.write_text(json.dumps(document, indent=2) + "\n")
            out.write(table(document))
            done = "wrote" if complete else "stopped early; wrote what it measured to"
            out.write(f"bench: {done} {BENCH_JSON.relative_to(BUILD_ROOT.parent)}\n")
    return document


def cpu_quota_for(plan: Plan) -> int:
    """Each instance's CPU quota (percent of one CPU) for the scaling figures: a controller
    and its workers together get this host's CPUs, as separate machines would each have theirs."""
    return 100 * (os.cpu_count() or 1) // (1 + plan.cluster_workers)


def measure_same_quota_standalone(
    settings: BakeSettings, launching: LaunchSettings, ami_id: str, plan: Plan, out: TextIO
) -> dict[str, Any]:
    """The cluster figures' baseline: one standalone instance with the cluster's per-instance quota."""
    bounded = dataclasses.replace(launching, cpu_quota=cpu_quota_for(plan))
    (instance,) = lifecycle.launch(bounded, ami_id, out)
    node = driven(BuildDir.of(settings), instance)
    try:
        figures = measure_tiny(node, plan, prefix="quota_")
        figures["quota_fanout_span_s"] = round(measure_wide_fanout(node, plan), 1)
    finally:
        lifecycle.teardown(settings)
    return figures


def measure_cluster(settings: LaunchSettings, ami_id: str, plan: Plan, out: TextIO) -> dict[str, Any]:
    cluster = dataclasses.replace(
        settings,
        workers=plan.cluster_workers,
        cluster="bench",
        cpu_quota=cpu_quota_for(plan),
        worker_concurrency=plan.worker_concurrency,
    )
    controller = lifecycle.launch(cluster, ami_id, out)[0]
    node = driven(BuildDir.of(settings), controller)
    # The workers read DAGs from the cluster's S3 bundle, not the controller's folder.
    with node.in_the_bundle(driver.FANOUT_DAG):
        figures = measure_tiny(node, plan, prefix="cluster_")
        figures["cluster_fanout_span_s"] = round(measure_wide_fanout(node, plan), 1)
    node.cleanup()
    return figures


# The upgrade's deployment: its dumps go to moto's S3, which goes with the local cloud.
UPGRADE_DEPLOYMENT = "bench-upgrade"
UPGRADE_BACKUPS = "s3://airflow-ami-bench-deployments/dumps"


def measure_upgrade(
    settings: BakeSettings, launching: LaunchSettings, ami_id: str, out: TextIO
) -> dict[str, Any]:
    """`./bake upgrade` of a named deployment to the same AMI: its downtime as it prints it
    (Airflow stopped on the old instance to the new one serving) and each step's seconds."""
    named = dataclasses.replace(launching, deployment=UPGRADE_DEPLOYMENT, backup_s3_uri=UPGRADE_BACKUPS)
    try:
        lifecycle.launch(named, ami_id, out)
        report = lifecycle.upgrade(named, ami_id, out, drain_seconds=60)
    finally:
        lifecycle.teardown(settings)
    return {
        "upgrade_downtime_s": round(report.downtime_s, 1),
        "upgrade_steps_s": {step: round(seconds, 1) for step, seconds in report.timings.items()},
    }


# Which figures are measured with the per-instance CPU quota (the rest: the host's CPUs).
QUOTA_FIGURES = (
    "quota_tiny_tasks_per_min",
    "quota_fanout_span_s",
    "cluster_tiny_tasks_per_min",
    "cluster_fanout_span_s",
    "cluster_speedup",
    "cluster_fanout_speedup",
)


def conditions(results: Mapping[str, Any], quota: int) -> dict[str, dict[str, Any]]:
    """For each figure: the CPU quota of its instances (0: none), their type and this host's CPUs."""
    return {
        key: {
            "cpu_quota_percent": quota if key in QUOTA_FIGURES else 0,
            "instance_type": INSTANCE_TYPE,
            "host_cpus": os.cpu_count(),
        }
        for key in results
    }


def machine() -> str:
    cpu = ""
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as fh:
        mem_gib = int(fh.readline().split()[1]) / (1 << 20)
    return f"{os.cpu_count()} CPUs ({cpu}), {mem_gib:.0f} GiB, {os.uname().release}"
