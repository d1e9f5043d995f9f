"""`provision.py leave-when-told` (airflow-worker-leave.service): a worker of an Auto Scaling
group leaves it without killing a task.

The group's termination lifecycle hook (contract.LIFECYCLE_HOOK, made with the group on
either cloud) holds a leaving worker in Terminating:Wait, and EC2 tells the worker through
IMDS: meta-data/autoscaling/target-lifecycle-state reads Terminated. This program asks every
layout.LEAVE_POLL_SECONDS and then, one log line a step:

1. stops the worker unit: Celery's warm shutdown takes no new task and lets the running
   ones finish (at most the unit's TimeoutStopSec, layout.WORKER_SERVICE stop_timeout);
2. with remote task logs on, puts in S3 every task log that is not there yet: Airflow
   puts a log there when its task ends, at <base>/<its path under the log folder>, so
   only a task cut short is missing;
3. completes the lifecycle action (CONTINUE): the group terminates the instance.

A failed AWS call is tried again a few times; a failed step ends the program with 1 and
systemd starts it again (each step is safe to repeat). If the worker never completes, the
hook lets it go after its timeout (the stop timeout and contract.LEAVE_MARGIN_SECONDS).
Another role, or a worker whose user data names no group, has nothing to watch: it exits 0.
"""

import os
import time

from ..shared import layout as L
from ..shared.airflowenv import recorded_role
from ..shared.awsapi import Imds, NoMetadata, list_s3_keys, put_s3_object, query_call
from ..shared.contract import BadUserData, parse_user_data, task_logs_location
from ..shared.runner import StepFailed, log

AUTOSCALING_VERSION = "2011-01-01"
LIFECYCLE_STATE = "meta-data/autoscaling/target-lifecycle-state"
TERMINATED = "Terminated"
# Airflow's task logs: dag_id=.../run_id=.../task_id=.../attempt=N.log under its log folder
# (its default log_filename_template, which the image keeps).
TASK_LOG_PREFIX = "dag_id="
# What Airflow's [logging] encrypt_s3_logs (set by first boot) asks of S3, for ours too.
ENCRYPTED = {"x-amz-server-side-encryption": "AES256"}
ATTEMPTS = 4
# AWS's answer to a completion of an action that is over (completed, or timed out).
NO_ACTION = "No active Lifecycle Action"


def retried(what, function, *args, sleep=time.sleep, **kwargs):
    """function(*args, **kwargs), tried again after 1, 2, 4 s when it raises OSError (the
    last error goes up); a request AWS refuses as invalid is not tried again."""
    attempt, delay = 1, 1
    while True:
        try:
            return function(*args, **kwargs)
        except OSError as exc:
            if attempt == ATTEMPTS or "ValidationError" in str(exc):
                raise
            log("leave: %s failed (try %d of %d), again in %d s: %s" % (what, attempt, ATTEMPTS, delay, exc))
        sleep(delay)
        attempt, delay = attempt + 1, delay * 2


def group_member(imds):
    """This worker's Role when its user data names its Auto Scaling group and hook, else None."""
    try:
        role = parse_user_data(imds.get("user-data"))
    except BadUserData as exc:
        log("leave: %s" % exc)
        return None
    return role if role.autoscaling_group and role.lifecycle_hook else None


def wait_until_told(imds, sleep, poll):
    """Until IMDS says this instance's target lifecycle state is Terminated; a line at each
    change. ``imds``: a new client each time (a token expires)."""
    last = None
    while True:
        try:
            state = imds().get(LIFECYCLE_STATE) or "not served"
        except NoMetadata as exc:
            state = "unknown (%s)" % exc
        if state != last:
            log("leave: target lifecycle state %s" % state)
            last = state
        if state == TERMINATED:
            return
        sleep(poll)


def stop_worker(ctx):
    unit = L.WORKER_SERVICE["unit"]
    log(
        "leave: stopping %s: it takes no new task and lets its running ones finish (at most %d s)"
        % (unit, L.WORKER_SERVICE["stop_timeout"])
    )
    started = time.monotonic()
    rc, out = ctx.run(["systemctl", "stop", unit], check=False, quiet=True)
    if rc != 0:
        raise StepFailed("systemctl stop %s exited %d: %s" % (unit, rc, out.strip()))
    log("leave: %s stopped after %.0f s" % (unit, time.monotonic() - started))


def task_logs(logs_dir):
    """The task logs under ``logs_dir``, as paths relative to it (sorted)."""
    found = []
    tops = sorted(os.listdir(logs_dir)) if os.path.isdir(logs_dir) else []
    for top in (t for t in tops if t.startswith(TASK_LOG_PREFIX)):
        for root, _, files in os.walk(os.path.join(logs_dir, top)):
            found += [os.path.relpath(os.path.join(root, name), logs_dir) for name in files]
    return sorted(found)


def upload_missing_logs(base_uri, logs_dir, region, creds, *, endpoint, sleep=time.sleep):
    """Every task log under ``logs_dir`` not yet under ``base_uri``, put there as Airflow
    would; returns (how many were put, how many there are)."""
    bucket, _, prefix = base_uri[len("s3://") :].partition("/")
    prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
    local = task_logs(logs_dir)
    there = set(
        retried(
            "listing s3://%s/%s" % (bucket, prefix),
            list_s3_keys,
            bucket,
            prefix,
            region,
            creds,
            endpoint=endpoint,
            sleep=sleep,
        )
    )
    missing = [path for path in local if prefix + path not in there]
    for path in missing:
        with open(os.path.join(logs_dir, path), "rb") as fh:
            data = fh.read()
        retried(
            "putting s3://%s/%s%s" % (bucket, prefix, path),
            put_s3_object,
            bucket,
            prefix + path,
            data,
            region,
            creds,
            endpoint=endpoint,
            headers=ENCRYPTED,
            sleep=sleep,
        )
    return len(missing), len(local)


def complete_action(role, instance_id, region, creds, *, endpoint, sleep=time.sleep):
    """CompleteLifecycleAction CONTINUE; True when done now, False when the action was over."""
    params = {
        "AutoScalingGroupName": role.autoscaling_group,
        "LifecycleHookName": role.lifecycle_hook,
        "InstanceId": instance_id,
        "LifecycleActionResult": "CONTINUE",
    }
    try:
        retried(
            "CompleteLifecycleAction",
            query_call,
            "autoscaling",
            "CompleteLifecycleAction",
            params,
            region,
            creds,
            version=AUTOSCALING_VERSION,
            endpoint=endpoint,
            sleep=sleep,
        )
    except OSError as exc:
        if NO_ACTION in str(exc):
            return False
        raise
    return True


def leave(ctx, role, imds, sleep=time.sleep):
    """Drain, put the task logs in S3, complete the lifecycle action (module docstring)."""
    stop_worker(ctx)
    creds = imds.role_credentials()
    if not creds:
        raise StepFailed(
            "the instance has no IAM role: it can neither put its task logs in S3 nor complete"
            " its lifecycle action (README 'Scaling in': the role the workers need)"
        )
    region = imds.get("meta-data/placement/region") or ctx.settings["region"]
    instance_id = imds.get("meta-data/instance-id")
    if not instance_id:
        raise StepFailed("IMDS names no instance id: the lifecycle action cannot be named")
    endpoint = ctx.settings["aws_endpoint_url"] or None
    base = task_logs_location(role, ctx.settings)
    if base:
        put, total = upload_missing_logs(base, L.AIRFLOW_LOGS, region, creds, endpoint=endpoint, sleep=sleep)
        log("leave: %d of %d task log(s) were not in %s yet: put there" % (put, total, base))
    else:
        log("leave: remote task logs are off (no task_logs_s3_uri): the task logs go with the instance")
    if complete_action(role, instance_id, region, creds, endpoint=endpoint, sleep=sleep):
        log(
            "leave: completed lifecycle action %s of %s for %s (CONTINUE): the group terminates it"
            % (role.lifecycle_hook, role.autoscaling_group, instance_id)
        )
    else:
        log("leave: the lifecycle action of %s is over already (completed, or timed out)" % instance_id)


def main(ctx, imds=Imds, sleep=time.sleep, poll=L.LEAVE_POLL_SECONDS):
    """Watch, then leave: 0 once left or with nothing to watch, 1 when a step failed."""
    if recorded_role() != "worker":
        log("leave: not a worker: nothing to watch")
        return 0
    try:
        role = group_member(imds())
    except NoMetadata as exc:
        log("!!! leave: no instance metadata (%s): whether this worker is in a group is unknown" % exc)
        return 1
    if role is None:
        log("leave: the user data names no Auto Scaling group: nothing to watch (a stop drains the worker)")
        return 0
    log(
        "leave: a worker of Auto Scaling group %s (hook %s): asking IMDS every %d s whether it is leaving"
        % (role.autoscaling_group, role.lifecycle_hook, poll)
    )
    wait_until_told(imds, sleep, poll)
    log("leave: the group is terminating this instance: leaving without killing a task")
    try:
        leave(ctx, role, imds(), sleep)
    except (StepFailed, NoMetadata, OSError, ValueError) as exc:
        log("!!! leave: %s; trying again (the hook lets the instance go after its timeout anyway)" % exc)
        return 1
    return 0
