#!/usr/bin/env python3
"""Provision an Airflow image on the instance itself (stdlib only, Python >= 3.7).

  provision.py install        --bundle DIR [--dry-run] [--expect-unchanged]   MySQL + Airflow, no secrets
  provision.py cleanup        --bundle DIR [--dry-run]   image hygiene, then validate
  provision.py validate-image --bundle DIR [--dry-run]   assert the hygiene rules
  provision.py firstboot      [--dry-run]                per-instance secrets (first boot)
  provision.py firstboot-admin                           the admin user and aws_default first boot left
                                                         (airflow-firstboot-admin.service)
  provision.py backup         [--when-due]               dump the metadata database (airflow-db-backup)
  provision.py refresh-secrets                           a named deployment's secrets as its store holds them
  provision.py rotate-fernet-key begin|finish            a new fernet key first; then re-encrypt, drop the old
  provision.py publish-controller                        this controller is its cluster's (again)
  provision.py metrics                                   Airflow's StatsD metrics and the instance's to
                                                         CloudWatch, until stopped (airflow-metrics)
  provision.py leave-when-told                           a worker of an Auto Scaling group: when told it
                                                         is leaving, drain, upload task logs, complete
                                                         the lifecycle action (airflow-worker-leave)
  provision.py restore        [--from DUMP]              replace the database by a dump: a path, an
                                                         s3:// URI, or latest; default: the newest here
  provision.py run-workloads                             Airflow's workloads, one process forked for each
                                                         from a server, as the task user, no secret in
                                                         reach (airflow-workload.service)
  provision.py audit-config                              log what changed under /etc/airflow and sudoers
                                                         (airflow-config-audit, started by its path unit)

--dry-run logs every step and what it would do, and changes nothing.
"""

import argparse
import os
import sys
from urllib.parse import urlsplit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from provisioning.bake import imagecheck, install
from provisioning.bake.osdetect import UnsupportedOS
from provisioning.bake.oskit import adapter_on_this_host
from provisioning.boot import firstboot
from provisioning.running import audit, backup, leave, metrics, secrets, taskrun
from provisioning.shared import layout
from provisioning.shared.contract import OsFacts, SettingsMissing, read_settings
from provisioning.shared.runner import Context, StepFailed, log, run_steps


def settings_of(bundle):
    """The bundle's settings.json while baking, the image's own copy afterwards."""
    path = os.path.join(bundle, "settings.json") if bundle else layout.BAKED_SETTINGS
    try:
        return read_settings(path)
    except (OSError, ValueError, SettingsMissing) as exc:
        raise StepFailed("cannot read %s: %s" % (path, exc)) from exc


# The commands that run while baking: only they install, so only they need the OS's adapter.
BAKE_COMMANDS = ("install", "cleanup", "validate-image")
OS_RELEASE = "/etc/os-release"


def read_os_release():
    with open(OS_RELEASE) as fh:
        return fh.read()


def build_context(args):
    bundle = os.path.abspath(args.bundle) if args.bundle else None
    settings = settings_of(bundle)
    dry_run = bool(args.dry_run or settings["dry_run"])
    facts = OsFacts.from_settings(settings)
    adapter = None
    if args.command in BAKE_COMMANDS:
        adapter = adapter_on_this_host(settings["os"], facts, read_os_release(), dry_run)
    ctx = Context(settings, bundle, dry_run, adapter, facts=facts)
    # An index URL may carry a token: no log line may show it.
    index = urlsplit(settings["index_url"])
    if index.password or index.username:
        ctx.add_secret(settings["index_url"])
        ctx.add_secret(index.password or index.username)
    return ctx


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="provision.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "command",
        choices=[
            "install",
            "cleanup",
            "validate-image",
            "firstboot",
            "firstboot-admin",
            "backup",
            "restore",
            "refresh-secrets",
            "rotate-fernet-key",
            "publish-controller",
            "metrics",
            "leave-when-told",
            "run-workloads",
            "audit-config",
        ],
    )
    parser.add_argument("phase", nargs="?", choices=["begin", "finish"], help="rotate-fernet-key: which half")
    parser.add_argument(
        "--from",
        dest="dump",
        help="restore: a dump's path or s3:// URI, or latest (default: the newest here)",
    )
    parser.add_argument(
        "--when-due",
        action="store_true",
        help="backup: only once backup_interval_minutes have passed (the timer)",
    )
    parser.add_argument("--bundle", help="the uploaded bundle (settings.json, scripts, files)")
    parser.add_argument(
        "--dry-run", action="store_true", help="log each step and what it would do; change nothing"
    )
    parser.add_argument(
        "--expect-unchanged",
        action="store_true",
        help="install: fail if any step changed something (proves a repeated run is a no-op)",
    )
    args = parser.parse_args(argv)
    if args.command == "run-workloads":
        return taskrun.main()
    if args.command == "audit-config":
        return audit.main()
    if args.command in BAKE_COMMANDS and not args.bundle:
        parser.error("--bundle is required for %s" % args.command)
    try:
        ctx = build_context(args)
    except (StepFailed, UnsupportedOS, OSError) as exc:
        log("!!! cannot start %s: %s" % (args.command, exc))
        return 2
    os.umask(0o022)
    if args.command == "install":
        status = install.main(ctx)
        changed = [t["step"] for t in ctx.timings if t["result"] == "changed"]
        if status == 0 and args.expect_unchanged and changed:
            log("!!! install is not idempotent: the repeated run changed %s" % ", ".join(changed))
            return 1
        return status
    if args.command == "firstboot":
        return firstboot.main(ctx)
    if args.command == "firstboot-admin":
        return firstboot.admin_main(ctx)
    if args.command == "refresh-secrets":
        return secrets.refresh(ctx)
    if args.command == "publish-controller":
        return secrets.publish_controller(ctx)
    if args.command == "metrics":
        return metrics.main(ctx)
    if args.command == "leave-when-told":
        return leave.main(ctx)
    if args.command == "rotate-fernet-key":
        if not args.phase:
            parser.error("rotate-fernet-key takes begin or finish")
        try:
            return secrets.rotate_fernet_key(ctx, args.phase)
        except StepFailed as exc:
            log("!!! rotate-fernet-key: %s" % exc)
            return 1
    if args.command == "backup":
        return backup.main(ctx, when_due=args.when_due)
    if args.command == "restore":
        try:
            return backup.restore(ctx, args.dump)
        except StepFailed as exc:
            log("!!! restore: %s" % exc)
            return 1
    if args.command == "cleanup":
        return run_steps(ctx, [*imagecheck.CLEANUP_STEPS, imagecheck.validate_image], "cleanup")
    return run_steps(ctx, [imagecheck.validate_image], "validate-image")


if __name__ == "__main__":
    sys.exit(main())
