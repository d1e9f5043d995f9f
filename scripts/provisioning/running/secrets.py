"""A named deployment's secrets on a running instance: refreshed from the store, and rotated.

refresh (airflow-secrets-refresh.timer, and `provision.py refresh-secrets`): the node
compares its secrets, and a worker its controller's address, with the deployment's
store and takes the store's when they differ, restarting its Airflow units. A rotation
elsewhere, or a replaced controller, does not strand it.

rotate (`provision.py rotate-fernet-key begin|finish` on the database node, driven by
`./bake rotate-fernet-key`): begin puts a new fernet key in front of the stored ones;
once every node has refreshed, finish re-encrypts every value with it
(`airflow rotate-fernet-key`) and stores it alone. The old key is dropped only then.

publish-controller: a controller says again that it is the cluster's (an upgrade
that failed after its new controller said so gives the workers back).
"""

from ..boot import firstboot
from ..boot.deployment import put_controller, read_secrets, replace_secrets
from ..shared import layout as L
from ..shared import systemd
from ..shared.airflowenv import service_env
from ..shared.runner import StepFailed, run_steps
from ..shared.secretgen import fernet_key


def unnamed(ctx):
    if not ctx.state.role.deployment:
        ctx.info("not a named deployment: its secrets are its own")
        return True
    return False


def named_only(ctx):
    """An instance of its own has nothing to refresh."""
    return "stop" if unnamed(ctx) else None


def keep_the_identity(ctx):
    """A refresh is no first boot: what is on disk is this instance's (mode complete)."""
    ctx.state.mode = "complete"


# The files the Airflow units read that a refresh may rewrite.
REWRITES = ("write_role", "write_secrets_env", "write_admin_password_file")


def restart_if_changed(ctx):
    """The Airflow units take what was rewritten."""
    rewrote = [t["step"] for t in ctx.timings if t["step"] in REWRITES and t["result"] == "changed"]
    if not rewrote:
        ctx.info("secrets as the store holds them: nothing to restart")
        return "skipped"
    units = [u for u in L.SERVICE_UNITS if systemd.is_active(ctx, u)]
    if units:
        ctx.act("restart %s" % " ".join(units), systemd.systemctl, ctx, "try-restart", *units)
    return None


REFRESH_STEPS = [
    firstboot.read_instance_identity,
    firstboot.read_role,
    named_only,
    firstboot.follow_the_controller,
    firstboot.write_role,
    firstboot.read_existing_secrets,
    keep_the_identity,
    firstboot.fetch_deployment_secrets,
    firstboot.generate_secrets,
    firstboot.write_secrets_env,
    firstboot.on_the_database_node(firstboot.write_admin_password_file),
    restart_if_changed,
]


def refresh(ctx):
    ctx.state, ctx.timings = firstboot.FirstbootState(), []
    return run_steps(ctx, REFRESH_STEPS, "refresh-secrets")


def say_where_the_controller_is(ctx):
    if ctx.state.role.role != "controller":
        raise StepFailed("publish-controller runs on a cluster's controller")
    store = firstboot.store_access(ctx)
    ctx.act(
        "say where the controller of %s is (%s)" % (ctx.state.role.deployment, ctx.state.private_ip),
        put_controller,
        store,
        ctx.state.role.deployment,
        ctx.state.private_ip,
    )


def publish_controller(ctx):
    """This controller is the cluster's again (an upgrade that failed gives the workers back)."""
    ctx.state = firstboot.FirstbootState()
    steps = [firstboot.read_instance_identity, firstboot.read_role, say_where_the_controller_is]
    return run_steps(ctx, steps, "publish-controller")


def rotate_fernet_key(ctx, phase):
    """begin: a new key first in the store (this node refreshed); finish: every value
    re-encrypted with it, and it alone stored. Run on the database node."""
    status = refresh(ctx)
    if status != 0:
        return status
    state = ctx.state
    if unnamed(ctx) or state.role.role == "worker":
        raise StepFailed("rotate-fernet-key runs on a named deployment's standalone instance or controller")
    store = firstboot.store_access(ctx)
    document = read_secrets(store, state.role.deployment)
    if phase == "begin":
        document["fernet_keys"] = [ctx.add_secret(fernet_key()), *document["fernet_keys"]]
    else:
        ctx.run(
            [L.AIRFLOW_BIN, "rotate-fernet-key"],
            env=service_env(ctx),
            user=L.AIRFLOW_USER,
            cwd=L.AIRFLOW_HOME,
        )
        document["fernet_keys"] = document["fernet_keys"][:1]
    ctx.act(
        "store %d fernet key(s) for deployment %s" % (len(document["fernet_keys"]), state.role.deployment),
        replace_secrets,
        store,
        state.role.deployment,
        document,
    )
    return refresh(ctx)
