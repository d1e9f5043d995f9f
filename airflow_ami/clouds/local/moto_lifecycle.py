"""moto's EC2 Auto Scaling with termination lifecycle hooks, as AWS has them (patched on import).

moto 5.2.5 keeps a group's lifecycle hooks (Put/Describe/Delete) but never uses them: it
terminates a leaving instance at once, drops a CreateAutoScalingGroup's
LifecycleHookSpecificationList, and has no CompleteLifecycleAction nor
RecordLifecycleActionHeartbeat. The local cloud's scale-in is the one AWS does, so this
module gives moto what it lacks. Importing it patches moto's Auto Scaling backend and
responses in this process: in tests under moto's decorators, and in the local cloud's
moto_server (motoserver.py imports it before moto serves).

- CreateAutoScalingGroup makes the hooks of its LifecycleHookSpecificationList.
- A scale-in of a group with an autoscaling:EC2_INSTANCE_TERMINATING hook
  (TerminateInstanceInAutoScalingGroup, or a DesiredCapacity below the instances in
  service) puts the leaving instance in Terminating:Wait until its action is completed
  or the hook's HeartbeatTimeout passes; it no longer counts as in service, so the group
  launches no replacement for it unless the capacity was kept.
- CompleteLifecycleAction (either result: a terminating instance goes anyway) and a wait
  past its deadline let it go as AWS does: it leaves the group and is terminated. A
  deadline is looked at whenever the backend is asked about the group (Describe*, and
  the calls below), so the next poll sees the timeout's outcome.
- RecordLifecycleActionHeartbeat restarts the wait's HeartbeatTimeout.
- DeleteAutoScalingGroup deletes the group's hooks and lets its waiting instances go, and
  AttachInstances adds to DesiredCapacity, as AWS does (moto keeps the hooks, and counts
  the leaving instances into the new capacity).

A lifecycle action is named by its instance (what a worker knows: IMDS tells it no token)
or by its LifecycleActionToken, which AWS hands to a notification's listener (EventBridge,
SNS); a token of another action, or an instance and a token that disagree, are refused.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from moto.autoscaling.exceptions import ValidationError
from moto.autoscaling.models import (
    ASG_NAME_TAG,
    AutoScalingBackend,
    FakeAutoScalingGroup,
    InstanceState,
    LifecycleHook,
    TerminateInstanceActivity,
)
from moto.autoscaling.responses import AutoScalingResponse
from moto.core.responses import EmptyResult

from airflow_ami.clouds.autoscaling import TERMINATING

WAITING = "Terminating:Wait"
RESULTS = ("CONTINUE", "ABANDON")


@dataclass
class LifecycleAction:
    """An instance waiting on a group's terminating hook."""

    group: str
    hook: str
    heartbeat_timeout: int
    deadline: float
    token: str


def _actions(backend: AutoScalingBackend) -> dict[str, LifecycleAction]:
    # In the backend's own __dict__: moto's reset of a backend empties it with the rest.
    actions: dict[str, LifecycleAction] = backend.__dict__.setdefault("lifecycle_actions", {})
    return actions


def _terminating_hook(backend: AutoScalingBackend, group: str) -> LifecycleHook | None:
    return next(
        (h for h in backend.describe_lifecycle_hooks(group) if h.lifecycle_transition == TERMINATING), None
    )


def _wait(backend: AutoScalingBackend, state: InstanceState, hook: LifecycleHook) -> None:
    state.lifecycle_state = WAITING
    timeout = int(hook.heartbeat_timeout)
    _actions(backend)[state.instance_id] = LifecycleAction(
        state.auto_scaling_group_name, hook.name, timeout, time.monotonic() + timeout, str(uuid.uuid4())
    )


def _proceed(backend: AutoScalingBackend, instance_id: str) -> None:
    """The action is over: the instance leaves its group and is terminated."""
    action = _actions(backend).pop(instance_id)
    group = backend.autoscaling_groups.get(action.group)
    if group is None:
        return
    group.instance_states = [s for s in group.instance_states if s.instance_id != instance_id]
    backend.ec2_backend.delete_tags([instance_id], {ASG_NAME_TAG: group.name})
    backend.ec2_backend.terminate_instances([instance_id])


def _expire(backend: AutoScalingBackend) -> None:
    """Waits past their deadline proceed (the hook's DefaultResult: for a terminating
    instance, CONTINUE and ABANDON both terminate it)."""
    now = time.monotonic()
    for instance_id, action in list(_actions(backend).items()):
        if action.deadline <= now:
            _proceed(backend, instance_id)


def action_token(backend: AutoScalingBackend, instance_id: str) -> str:
    """The token of `instance_id`'s waiting action: what AWS's notification of it carries."""
    return _actions(backend)[instance_id].token


def _waiting_action(
    backend: AutoScalingBackend, group: str, hook: str, instance_id: str | None, token: str | None = None
) -> tuple[str, LifecycleAction]:
    """(instance id, action) of the action named by its instance, its token, or both."""
    _expire(backend)
    if group not in backend.autoscaling_groups:
        raise ValidationError(f"AutoScalingGroup name not found - AutoScalingGroup '{group}' not found")
    if not instance_id and not token:
        raise ValidationError("name the lifecycle action by its InstanceId or its LifecycleActionToken")
    found = [
        (i, a)
        for i, a in _actions(backend).items()
        if (a.group, a.hook) == (group, hook) and i == (instance_id or i) and a.token == (token or a.token)
    ]
    if not found:
        named = f"instance ID {instance_id}" if instance_id else f"token {token}"
        raise ValidationError(f"No active Lifecycle Action found with {named}")
    return found[0]


def complete_lifecycle_action(
    backend: AutoScalingBackend,
    group: str,
    hook: str,
    instance_id: str | None,
    result: str,
    *,
    token: str | None = None,
) -> None:
    if result not in RESULTS:
        raise ValidationError(f"LifecycleActionResult must be one of {', '.join(RESULTS)} (got {result!r})")
    leaving, _ = _waiting_action(backend, group, hook, instance_id, token)
    _proceed(backend, leaving)


def record_lifecycle_action_heartbeat(
    backend: AutoScalingBackend, group: str, hook: str, instance_id: str | None, token: str | None = None
) -> None:
    _, action = _waiting_action(backend, group, hook, instance_id, token)
    action.deadline = time.monotonic() + action.heartbeat_timeout


def _patch(cls: type, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Replace cls.name by function(original, self, ...)."""

    def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
        original = getattr(cls, name)

        @functools.wraps(original)
        def patched(self: Any, *args: Any, **kwargs: Any) -> Any:
            return function(original, self, *args, **kwargs)

        setattr(cls, name, patched)
        return function

    return decorate


@_patch(AutoScalingBackend, "terminate_instance")
def _terminate_instance(
    original: Callable[..., TerminateInstanceActivity],
    self: AutoScalingBackend,
    instance_id: str,
    should_decrement: bool,
) -> TerminateInstanceActivity:
    _expire(self)
    state = next(
        (
            s
            for g in self.autoscaling_groups.values()
            for s in g.instance_states
            if s.instance_id == instance_id
        ),
        None,
    )
    if state is None:
        raise ValidationError(
            f"Instance Id not found - No managed instance found for instance ID: {instance_id}"
        )
    hook = _terminating_hook(self, state.auto_scaling_group_name)
    if hook is None:
        return original(self, instance_id, should_decrement)
    if state.lifecycle_state != "InService":
        raise ValidationError(f"The instance {instance_id} is not in service: it is {state.lifecycle_state}")
    group = state.auto_scaling_group
    original_size = group.desired_capacity
    if should_decrement:
        group.desired_capacity -= 1
    _wait(self, state, hook)
    # Without the decrement the group replaces it at once, as AWS does.
    group.set_desired_capacity(group.desired_capacity)
    return TerminateInstanceActivity(state.instance, original_size)


@_patch(FakeAutoScalingGroup, "set_desired_capacity")
def _set_desired_capacity(
    original: Callable[..., None], self: FakeAutoScalingGroup, new_capacity: int | None
) -> None:
    target = self.min_size if new_capacity is None else new_capacity
    surplus = len(self.active_instances()) - (target or 0)
    hook = _terminating_hook(self.autoscaling_backend, self.name) if surplus > 0 else None
    if hook is not None:
        unprotected = [s for s in self.active_instances() if not s.protected_from_scale_in]
        for state in unprotected[:surplus]:
            _wait(self.autoscaling_backend, state, hook)
    original(self, new_capacity)


@_patch(AutoScalingBackend, "delete_auto_scaling_group")
def _delete_auto_scaling_group(
    original: Callable[..., None], self: AutoScalingBackend, group_name: str
) -> None:
    if group_name in self.autoscaling_groups:
        for hook in self.describe_lifecycle_hooks(group_name):
            self.delete_lifecycle_hook(group_name, hook.name)
        for instance_id, action in list(_actions(self).items()):
            if action.group == group_name:
                _proceed(self, instance_id)
    original(self, group_name)


@_patch(AutoScalingBackend, "attach_instances")
def _attach_instances(
    original: Callable[..., None], self: AutoScalingBackend, group_name: str, instance_ids: list[str]
) -> None:
    desired = self.autoscaling_groups[group_name].desired_capacity or 0
    original(self, group_name, instance_ids)
    self.autoscaling_groups[group_name].desired_capacity = desired + len(instance_ids)


def _expiring(original: Callable[..., Any], self: AutoScalingBackend, *args: Any, **kw: Any) -> Any:
    _expire(self)
    return original(self, *args, **kw)


# What a caller polls to see an instance leave: it sees a timed-out wait's outcome.
for _name in ("describe_auto_scaling_groups", "describe_auto_scaling_instances"):
    _patch(AutoScalingBackend, _name)(_expiring)


@_patch(AutoScalingResponse, "create_auto_scaling_group")
def _create_auto_scaling_group(original: Callable[..., Any], self: AutoScalingResponse) -> Any:
    result = original(self)
    group = self._get_param("AutoScalingGroupName")
    for spec in self._get_param("LifecycleHookSpecificationList", []):
        self.autoscaling_backend.create_lifecycle_hook(
            name=spec["LifecycleHookName"],
            as_name=group,
            transition=spec["LifecycleTransition"],
            timeout=int(spec["HeartbeatTimeout"]) if spec.get("HeartbeatTimeout") else None,
            result=spec.get("DefaultResult"),
        )
    return result


def _complete_lifecycle_action(self: AutoScalingResponse) -> EmptyResult:
    complete_lifecycle_action(
        self.autoscaling_backend,
        self._get_param("AutoScalingGroupName"),
        self._get_param("LifecycleHookName"),
        self._get_param("InstanceId"),
        self._get_param("LifecycleActionResult"),
        token=self._get_param("LifecycleActionToken"),
    )
    return EmptyResult()


def _record_lifecycle_action_heartbeat(self: AutoScalingResponse) -> EmptyResult:
    record_lifecycle_action_heartbeat(
        self.autoscaling_backend,
        self._get_param("AutoScalingGroupName"),
        self._get_param("LifecycleHookName"),
        self._get_param("InstanceId"),
        self._get_param("LifecycleActionToken"),
    )
    return EmptyResult()


# moto answers an action with the response method of its snake_case name.
AutoScalingResponse.complete_lifecycle_action = _complete_lifecycle_action  # type: ignore[attr-defined]
AutoScalingResponse.record_lifecycle_action_heartbeat = _record_lifecycle_action_heartbeat  # type: ignore[attr-defined]
