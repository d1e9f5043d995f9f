"""systemctl for the steps: probes (read-only, fine in a dry run), changes through ctx.act."""


def systemctl(ctx, *args):
    return ctx.run(["systemctl", *args])


def is_enabled(ctx, unit):
    return ctx.probe(["systemctl", "is-enabled", "--quiet", unit])[0] == 0


def is_active(ctx, unit):
    return ctx.probe(["systemctl", "is-active", "--quiet", unit])[0] == 0


def enable(ctx, unit):
    if not is_enabled(ctx, unit):
        ctx.act("enable %s" % unit, systemctl, ctx, "enable", unit)


def stop(ctx, unit):
    if is_active(ctx, unit):
        ctx.act("stop %s" % unit, systemctl, ctx, "stop", unit)
