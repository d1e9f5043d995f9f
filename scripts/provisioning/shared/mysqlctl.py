"""MySQL as root over the local socket (install and first boot)."""

import time

from .runner import StepFailed


def mysql_sql(ctx, sql, database=None, quiet=False):
    """Run SQL as MySQL root over the socket; SQL (and any secret in it) goes via stdin."""
    argv = [
        "mysql",
        "--protocol=socket",
        "-S",
        ctx.facts.mysql_socket,
        "-u",
        "root",
        "--batch",
        "--skip-column-names",
    ]
    if database:
        argv.append(database)
    if not quiet:
        for stmt in sql.strip().splitlines():
            ctx.info("sql> " + stmt)
    return ctx.run(argv, input_text=sql, quiet=True)[1]


def schema_revision(ctx, database):
    """The Airflow schema's alembic revision in `database`, "" when it has none (no schema)."""
    argv = ["mysql", "--protocol=socket", "-S", ctx.facts.mysql_socket, "-u", "root", "--batch"]
    sql = "SELECT version_num FROM `%s`.alembic_version;" % database
    rc, out = ctx.run([*argv, "--skip-column-names"], input_text=sql, check=False, quiet=True)
    return out.strip() if rc == 0 else ""


def wait_for_mysql(ctx, timeout=120):
    deadline = time.time() + timeout
    while True:
        rc, _ = ctx.probe(
            ["mysqladmin", "--protocol=socket", "-S", ctx.facts.mysql_socket, "-u", "root", "ping"]
        )
        if rc == 0:
            return
        if time.time() > deadline:
            raise StepFailed("MySQL did not answer on %s within %d s" % (ctx.facts.mysql_socket, timeout))
        time.sleep(1)
