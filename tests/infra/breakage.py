"""Deliberately break an instance, run the suite against it, and restore it.

The negative checks of issue 5: against a broken instance the testinfra suite
must go red with a message naming the cause. Three breakages:

  parallelism          AIRFLOW__CORE__PARALLELISM=1 appended to /etc/airflow/airflow.env
                       (serial execution, what SequentialExecutor used to give)
  mysql-public         a MySQL drop-in with bind-address = 0.0.0.0
  scheduler-disabled   `systemctl disable airflow-scheduler.service` (still running)

Each break records what it changed on the instance (under BACKUP_DIR, so a
crashed run can still be undone) and each restore is idempotent: `restore_all`
is safe to call on a healthy instance.

Needs only the standard library, testinfra and the image's layout
(airflow_ami.layout), so an e2e test can load it from anywhere:

    import importlib.util, pathlib
    spec = importlib.util.spec_from_file_location("breakage", "tests/infra/breakage.py")
    breakage = importlib.util.module_from_spec(spec); spec.loader.exec_module(breakage)
    host = testinfra.get_host("ssh://admin@10.1.2.3", ssh_identity_file=key)
    result = breakage.check_case("mysql-public", host, "ssh://admin@10.1.2.3",
                                 ssh_identity_file=key)
    assert result.ok, result.explain()

Or by hand:  python tests/infra/breakage.py --hosts ssh://admin@ADDR
             --ssh-identity-file KEY [--case NAME] [--break-only|--restore-only]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

SUITE_DIR = Path(__file__).resolve().parent
REPO_ROOT = SUITE_DIR.parent.parent
sys.path.insert(0, str(REPO_ROOT))
from airflow_ami.seam import layout  # noqa: E402  (importable however this file was loaded)

BACKUP_DIR = "/var/tmp/airflow-ami-testinfra-breakage"
AIRFLOW_ENV = layout.AIRFLOW_ENV
AIRFLOW_CLI = layout.AIRFLOW_CLI
layout.BAKED_SETTINGS = layout.BAKED_SETTINGS
SCHEDULER = layout.SCHEDULER_UNIT
MYSQL_DROPIN_NAME = "zzzz-airflow-ami-testinfra-breakage.cnf"
MARK = "# airflow-ami testinfra breakage: remove me"


class BreakageError(RuntimeError):
    """A break or restore step did not take effect."""


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    description: str
    select: str  # pytest -k expression choosing the tests that must go red
    causes: tuple[str, ...]  # regexes the red output must contain (all of them)


CASES: dict[str, Case] = {
    "parallelism": Case(
        "parallelism",
        "[core] parallelism = 1: tasks run one at a time",
        "parallelism or fanout",
        (r"parallelism 1\b", r"at most 1 ran at once"),
    ),
    "mysql-public": Case(
        "mysql-public",
        "MySQL bound to 0.0.0.0",
        "mysql_listens_on_loopback_only or mysql_bind_address or no_unexpected_listeners",
        (r"MySQL listening beyond loopback: \[[^\]]*0\.0\.0\.0:3306", r"@@bind_address=0\.0\.0\.0"),
    ),
    "scheduler-disabled": Case(
        "scheduler-disabled",
        f"{SCHEDULER} disabled (would not start at boot)",
        "service_enabled and scheduler",
        (rf"is-enabled {re.escape(SCHEDULER)} -> disabled",),
    ),
}


# --- running commands on the instance ----------------------------------------


def _sh(host: Any, cmd: str) -> Any:
    if host.run("id -u").stdout.strip() != "0":
        cmd = "sudo -n sh -c " + shlex.quote(cmd)
    return host.run(cmd)


def _check(host: Any, cmd: str) -> str:
    res = _sh(host, cmd)
    if res.rc != 0:
        raise BreakageError(f"`{cmd}` exit {res.rc}: {(res.stderr or res.stdout).strip()[-800:]}")
    return str(res.stdout)


def _settings(host: Any) -> dict[str, Any]:
    """What the image was baked with: /etc/airflow-ami/settings.json."""
    return dict(json.loads(_check(host, f"cat {layout.BAKED_SETTINGS}")))


def _api_port(host: Any) -> int:
    return int(_settings(host)["api_port"])


def wait_healthy(host: Any, timeout: float = 300.0) -> None:
    """Wait until the API's health endpoint reports every component healthy."""
    script = (
        "import json,sys,urllib.request\n"
        "try:\n"
        f" d=json.load(urllib.request.urlopen('http://127.0.0.1:{_api_port(host)}"
        "/api/v2/monitor/health',timeout=10))\n"
        " ok=all(d.get(c,{}).get('status')=='healthy' for c in"
        " ('metadatabase','scheduler','dag_processor'))\n"
        "except Exception:\n ok=False\n"
        "sys.exit(0 if ok else 1)\n"
    )
    deadline = time.monotonic() + timeout
    while _sh(host, f"python3 -c {shlex.quote(script)}").rc != 0:
        if time.monotonic() > deadline:
            raise BreakageError(f"instance not healthy within {timeout:.0f} s")
        time.sleep(3)


def _wait_active(host: Any, unit: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while _sh(host, f"systemctl is-active --quiet {unit}").rc != 0:
        if time.monotonic() > deadline:
            raise BreakageError(f"{unit} not active within {timeout:.0f} s")
        time.sleep(2)


def _backup_path(name: str) -> str:
    return f"{BACKUP_DIR}/{name}"


def _exists(host: Any, path: str) -> bool:
    return _sh(host, f"test -e {shlex.quote(path)}").rc == 0


def _effective_parallelism(host: Any) -> str:
    out = _check(host, f"{AIRFLOW_CLI} config get-value core parallelism")
    return [ln for ln in out.splitlines() if ln.strip()][-1].strip()


# --- (a) parallelism 1 ---------------------------------------------------------


def break_parallelism(host: Any) -> None:
    backup = _backup_path("airflow.env")
    if not _exists(host, backup):
        _check(host, f"mkdir -p -m 0700 {BACKUP_DIR} && cp -p {AIRFLOW_ENV} {backup}")
    _check(
        host,
        f"printf '%s\\n' {shlex.quote(MARK)} AIRFLOW__CORE__PARALLELISM=1 >> {AIRFLOW_ENV}"
        f" && systemctl restart {SCHEDULER}",
    )
    _wait_active(host, SCHEDULER)
    found = _effective_parallelism(host)
    if found != "1":
        raise BreakageError(
            f"parallelism still {found} after appending to {AIRFLOW_ENV}: does {AIRFLOW_CLI} read it?"
        )


def restore_parallelism(host: Any) -> None:
    backup = _backup_path("airflow.env")
    if _exists(host, backup):
        _check(host, f"cp -p {backup} {AIRFLOW_ENV} && rm -f {backup}")
        _check(host, f"systemctl restart {SCHEDULER}")
        _wait_active(host, SCHEDULER)
    found = _effective_parallelism(host)
    if found == "1":
        raise BreakageError(f"parallelism still 1 after restoring {AIRFLOW_ENV}")


# --- (b) MySQL on 0.0.0.0 --------------------------------------------------------


def _mysql_unit(host: Any) -> str:
    return str(_settings(host)["os_facts"]["mysql_unit"])


def _mysql_dropin_dir(host: Any) -> str:
    """The include directory of the image's own MySQL drop-in: ours sorts after it there."""
    return os.path.dirname(_settings(host)["os_facts"]["mysql_dropin"])


def _bind_address(host: Any) -> str:
    return _check(host, "mysql --batch --skip-column-names -e 'SELECT @@bind_address'").strip()


def break_mysql_public(host: Any) -> None:
    dropin = f"{_mysql_dropin_dir(host)}/{MYSQL_DROPIN_NAME}"
    _check(host, f"mkdir -p -m 0700 {BACKUP_DIR} && echo {shlex.quote(dropin)} > {BACKUP_DIR}/mysql")
    _check(
        host,
        f"printf '%s\\n' {shlex.quote(MARK)} '[mysqld]' 'bind-address = 0.0.0.0' > {dropin}"
        f" && chmod 0644 {dropin} && systemctl restart {_mysql_unit(host)}",
    )
    found = _bind_address(host)
    if found != "0.0.0.0":
        raise BreakageError(f"@@bind_address is {found} after adding {dropin}")


def restore_mysql_public(host: Any) -> None:
    record = _backup_path("mysql")
    if not _exists(host, record):
        return
    dropin = _check(host, f"cat {record}").strip()
    _check(host, f"rm -f {shlex.quote(dropin)} && systemctl restart {_mysql_unit(host)}")
    found = _bind_address(host)
    if found == "0.0.0.0":
        raise BreakageError(f"@@bind_address still 0.0.0.0 after removing {dropin}")
    _check(host, f"rm -f {record}")
    wait_healthy(host)


# --- (c) scheduler unit disabled ---------------------------------------------------


def _unit_links(host: Any, unit: str) -> list[str]:
    out = _sh(host, f"find /etc/systemd/system -lname '*/{unit}' -printf '%p %l\\n' 2>/dev/null").stdout
    return sorted(line for line in out.splitlines() if line.strip())


def disable_scheduler(host: Any, *, stop: bool = False) -> None:
    record = _backup_path("scheduler-links")
    if not _exists(host, record):
        links = "\n".join(_unit_links(host, SCHEDULER))
        _check(
            host,
            f"mkdir -p -m 0700 {BACKUP_DIR} && printf '%s\\n' {shlex.quote(links)} > {record}",
        )
    _check(host, f"systemctl disable {'--now ' if stop else ''}{SCHEDULER}")
    state = _sh(host, f"systemctl is-enabled {SCHEDULER}").stdout.strip()
    if state == "enabled":
        raise BreakageError(f"{SCHEDULER} still enabled after systemctl disable")


def restore_scheduler(host: Any) -> None:
    record = _backup_path("scheduler-links")
    if not _exists(host, record):
        return
    _sh(host, f"systemctl enable {SCHEDULER}")
    for line in _check(host, f"cat {record}").splitlines():
        if " " not in line:
            continue
        link, target = line.split(" ", 1)
        _check(
            host,
            f"mkdir -p {shlex.quote(os.path.dirname(link))} && "
            f"ln -sfn {shlex.quote(target)} {shlex.quote(link)}",
        )
    _check(host, f"systemctl daemon-reload && systemctl start {SCHEDULER}")
    state = _sh(host, f"systemctl is-enabled {SCHEDULER}").stdout.strip()
    if state != "enabled":
        raise BreakageError(f"{SCHEDULER} is {state} after restore")
    _check(host, f"rm -f {record}")
    _wait_active(host, SCHEDULER)


BREAKERS = {
    "parallelism": (break_parallelism, restore_parallelism),
    "mysql-public": (break_mysql_public, restore_mysql_public),
    "scheduler-disabled": (disable_scheduler, restore_scheduler),
}


def break_instance(host: Any, case: str) -> None:
    BREAKERS[case][0](host)


def restore_instance(host: Any, case: str) -> None:
    BREAKERS[case][1](host)


def restore_all(host: Any) -> None:
    """Undo every breakage left on the instance (idempotent), then wait for health."""
    for _, restore in BREAKERS.values():
        restore(host)
    _sh(host, f"rmdir {BACKUP_DIR} 2>/dev/null; true")
    wait_healthy(host)


@contextlib.contextmanager
def broken(host: Any, case: str) -> Iterator[None]:
    """Break the instance for the duration of the block, restore it afterwards."""
    try:
        break_instance(host, case)
        yield
    finally:
        restore_instance(host, case)
        _sh(host, f"rmdir {BACKUP_DIR} 2>/dev/null; true")
        wait_healthy(host)


# --- running the suite ----------------------------------------------------------------


@dataclasses.dataclass
class SuiteRun:
    args: list[str]
    returncode: int
    output: str
    seconds: float

    @property
    def red(self) -> bool:
        return self.returncode == 1

    @property
    def failed_tests(self) -> list[str]:
        return re.findall(r"^FAILED (\S+)", self.output, flags=re.MULTILINE)

    def names(self, pattern: str) -> bool:
        return re.search(pattern, self.output) is not None


def run_suite(
    hosts: str,
    *,
    select: str | None = None,
    markers: str | None = "not slow",
    ssh_identity_file: str | None = None,
    ssh_config: str | None = None,
    extra_args: Sequence[str] = (),
    timeout: float = 1800.0,
    python: str = sys.executable,
) -> SuiteRun:
    """Run the testinfra suite in a subprocess and capture its output."""
    args = [python, "-m", "pytest", str(SUITE_DIR), f"--hosts={hosts}", "-p", "no:cacheprovider"]
    args += ["-o", "addopts=", "-ra", "--strict-markers", "--tb=short"]
    if ssh_identity_file:
        args.append(f"--ssh-identity-file={ssh_identity_file}")
    if ssh_config:
        args.append(f"--ssh-config={ssh_config}")
    if select:
        args += ["-k", select]
    if markers:
        args += ["-m", markers]
    args += list(extra_args)
    start = time.monotonic()
    proc = subprocess.run(
        args,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return SuiteRun(args, proc.returncode, proc.stdout + proc.stderr, time.monotonic() - start)


@dataclasses.dataclass
class CaseResult:
    case: Case
    run: SuiteRun
    missing_causes: list[str]

    @property
    def ok(self) -> bool:
        """Red, with every expected cause named in the output."""
        return self.run.red and not self.missing_causes and bool(self.run.failed_tests)

    def explain(self) -> str:
        return (
            f"breakage {self.case.name} ({self.case.description}): suite exit "
            f"{self.run.returncode}, failed {self.run.failed_tests}, causes not named "
            f"{self.missing_causes}\n--- suite output ---\n{self.run.output[-6000:]}"
        )


def check_case(case: str, host: Any, hosts: str, **run_kwargs: Any) -> CaseResult:
    """Break `host` as `case`, run the matching tests, restore; report the verdict."""
    spec = CASES[case]
    with broken(host, case):
        run = run_suite(hosts, select=spec.select, **run_kwargs)
    missing = [c for c in spec.causes if not run.names(c)]
    return CaseResult(spec, run, missing)


def main(argv: Sequence[str] | None = None) -> int:
    import testinfra  # noqa: PLC0415  (only the CLI needs it)

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--hosts", required=True, help="one testinfra host spec, e.g. ssh://u@addr")
    ap.add_argument("--ssh-identity-file")
    ap.add_argument("--ssh-config")
    ap.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    ap.add_argument("--case", choices=sorted(CASES), action="append")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--break-only", action="store_true")
    mode.add_argument("--restore-only", action="store_true")
    opts = ap.parse_args(argv)
    host = testinfra.get_host(
        opts.hosts, ssh_identity_file=opts.ssh_identity_file, ssh_config=opts.ssh_config
    )
    cases = opts.case or sorted(CASES)
    if opts.restore_only:
        restore_all(host)
        return 0
    if opts.break_only:
        for case in cases:
            break_instance(host, case)
        return 0
    worst = 0
    for case in cases:
        result = check_case(
            case,
            host,
            opts.hosts,
            ssh_identity_file=opts.ssh_identity_file,
            ssh_config=opts.ssh_config,
            extra_args=opts.pytest_args,
        )
        verdict = "OK (red, cause named)" if result.ok else "NOT OK"
        print(f"{case}: {verdict} in {result.run.seconds:.0f} s; failed {result.run.failed_tests}")
        if not result.ok:
            print(result.explain())
            worst = 1
    return worst


if __name__ == "__main__":
    sys.exit(main())
