"""Step runner: named, timed, logged steps; dry-run; subprocess helpers.

Every step is a small function with a name that says what it does.  The runner
logs ``==> name`` before, ``<== name (1.2 s): changed|unchanged|skipped`` after,
and on failure ``!!! step 'name' failed after 1.2 s: why``.

A dry run changes nothing and says what a real run would change.  A step makes
each change through :meth:`Context.act` (or :meth:`Context.write_file`,
:meth:`Context.ensure_dir`, :meth:`Context.remove`), which in a dry run only
describe it; :meth:`Context.run` refuses to run at all, as a safety net.  A step
that can only inspect what a real run made (a running MySQL, the built venv) is
marked :func:`real_run_only` and a dry run describes it instead of calling it.
"""

import grp
import hashlib
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time

LOG_PREFIX = "airflow-ami"


class StepFailed(Exception):
    """Raised by a step to stop the run with a one-line reason (and the program's exit status)."""

    def __init__(self, message, exit_status=1):
        super(StepFailed, self).__init__(message)
        self.exit_status = exit_status


def log(msg):
    sys.stdout.write("%s %s: %s\n" % (time.strftime("%H:%M:%S"), LOG_PREFIX, msg))
    sys.stdout.flush()


class Context(object):
    """What a step may use: settings, OS adapter and facts, dry-run flag, redaction."""

    def __init__(self, settings, bundle, dry_run, os_adapter=None, *, facts=None, state=None):
        self.settings = settings
        self.bundle = bundle
        self.dry_run = dry_run
        self.os = os_adapter
        self.facts = facts  # contract.OsFacts: where this OS keeps MySQL and the CA files
        # what one step hands to a later one, declared by the program that runs them
        # (install.InstallState, firstboot.FirstbootState)
        self.state = state
        self.changed = False
        self.secrets = []  # values that must never reach a log line
        self.env = dict(os.environ)
        self.timings = []

    def another(self):
        """A context for another program's steps (state of their own), sharing the settings,
        the OS, dry-run and the secrets to redact."""
        ctx = Context(self.settings, self.bundle, self.dry_run, self.os, facts=self.facts)
        ctx.secrets = self.secrets
        return ctx

    # -- logging ---------------------------------------------------------
    def redact(self, text):
        text = str(text)
        for secret in self.secrets:
            if secret:
                text = text.replace(secret, "***")
        return text

    def info(self, msg):
        log("    " + self.redact(msg))

    def would(self, msg):
        """Describe an action; perform nothing (dry-run) or mark the step changed."""
        if self.dry_run:
            log("    [dry-run] would " + self.redact(msg))
        else:
            log("    " + self.redact(msg))
            self.changed = True

    def act(self, description, function, *args, **kwargs):
        """Make one change: ``function(*args, **kwargs)``, described by ``description``.

        A dry run logs "would <description>" and calls nothing (returns None); a real
        run logs it, marks the step changed and returns what the function returns.
        """
        self.would(description)
        if self.dry_run:
            return None
        return function(*args, **kwargs)

    def add_secret(self, value):
        self.secrets.append(value)
        return value

    # -- commands --------------------------------------------------------
    def run(
        self,
        argv,
        input_text=None,
        *,
        check=True,
        env=None,
        capture=True,
        user=None,
        cwd=None,
        quiet=False,
        timeout=None,
    ):
        """Run a command (never in dry-run).  Secrets go via stdin/env, never argv."""
        if self.dry_run:
            raise AssertionError("run() called in dry-run mode: %s" % " ".join(argv))
        for secret in self.secrets:
            if secret and any(secret in a for a in argv):
                raise AssertionError("refusing to put a secret in a process argument")
        if not quiet:
            shown = [a if "\n" not in a else "<%d-line script>" % len(a.splitlines()) for a in argv]
            self.info("$ " + " ".join(shown))
        full_env = dict(self.env)
        if env:
            full_env.update(env)
        preexec = _drop_privileges(user) if user else None
        proc = subprocess.run(
            argv,
            input=input_text.encode() if input_text is not None else None,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.STDOUT if capture else None,
            env=full_env,
            preexec_fn=preexec,
            cwd=cwd,
            timeout=timeout,
            check=False,
        )
        out = proc.stdout.decode("utf-8", "replace") if capture and proc.stdout else ""
        if check and proc.returncode != 0:
            tail = "\n".join(self.redact(out).strip().splitlines()[-25:])
            raise StepFailed(
                "command %s exited %d%s"
                % (
                    argv[0] if len(argv) == 1 else " ".join(argv[:3]),
                    proc.returncode,
                    (":\n" + tail) if tail else "",
                )
            )
        return proc.returncode, out

    def probe(self, argv, **kw):
        """Read-only command, allowed in dry-run (e.g. ``rpm -q``). Returns (rc, out)."""
        try:
            proc = subprocess.run(
                argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=self.env, check=False, **kw
            )
        except OSError as exc:
            return 127, str(exc)
        return proc.returncode, proc.stdout.decode("utf-8", "replace")

    # -- files -----------------------------------------------------------
    def write_file(self, path, content, mode=0o644, owner=None, group=None, *, secret=False):
        """Write ``content`` atomically if it differs; returns True when changed."""
        if isinstance(content, str):
            content = content.encode("utf-8")
        current = None
        if os.path.isfile(path):
            with open(path, "rb") as fh:
                current = fh.read()
        uid, gid = _ids(owner, group)
        same_meta = current is not None and _meta_matches(path, mode, uid, gid)
        if current == content and same_meta:
            return False
        what = "secret file" if secret else "%d bytes" % len(content)
        verb = "update" if current is not None else "create"
        if current == content:
            verb = "fix mode/owner of"
        self.would("%s %s (%s, mode %o)" % (verb, path, what, mode))
        if self.dry_run:
            return True
        directory = os.path.dirname(path) or "."
        if not os.path.isdir(directory):
            os.makedirs(directory, 0o755)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".airflow-ami-")
        try:
            os.fchmod(fd, mode)
            if uid is not None or gid is not None:
                os.fchown(fd, -1 if uid is None else uid, -1 if gid is None else gid)
            with os.fdopen(fd, "wb") as fh:
                fh.write(content)
                fh.flush()
                os.fsync(fh.fileno())
            os.rename(tmp, path)
            fsync_directory(directory)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return True

    def ensure_dir(self, path, mode=0o755, owner=None, group=None):
        uid, gid = _ids(owner, group)
        if os.path.isdir(path) and _meta_matches(path, mode, uid, gid):
            return False
        self.would("ensure directory %s (mode %o, owner %s:%s)" % (path, mode, owner, group))
        if self.dry_run:
            return True
        if not os.path.isdir(path):
            os.makedirs(path, mode)
        os.chmod(path, mode)
        if uid is not None or gid is not None:
            os.chown(path, -1 if uid is None else uid, -1 if gid is None else gid)
        return True

    def remove(self, path):
        if not os.path.lexists(path):
            return False
        self.would("remove %s" % path)
        if self.dry_run:
            return True
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
        return True


def fsync_directory(directory):
    """Make a rename in ``directory`` durable: a power cut after it keeps the new file."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _ids(owner, group):
    uid = pwd.getpwnam(owner).pw_uid if owner and _user_exists(owner) else None
    gid = grp.getgrnam(group).gr_gid if group and _group_exists(group) else None
    return uid, gid


def _user_exists(name):
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def _group_exists(name):
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def _meta_matches(path, mode, uid, gid):
    st = os.stat(path)
    if (st.st_mode & 0o7777) != mode:
        return False
    if uid is not None and st.st_uid != uid:
        return False
    return not (gid is not None and st.st_gid != gid)


def _drop_privileges(user):
    entry = pwd.getpwnam(user)

    def preexec():
        os.setgroups([])
        os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)

    return preexec


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def real_run_only(description):
    """Mark a step that can only inspect what a real run made (a running MySQL, the
    venv): a dry run logs "would <description>" instead of calling it."""

    def mark(step):
        step.dry_run_description = description
        return step

    return mark


def run_steps(ctx, steps, title):
    """Run ``steps`` (list of functions taking ctx) in order; stop at the first failure."""
    mode = " (dry run: nothing will be changed)" if ctx.dry_run else ""
    log("%s: %d steps%s" % (title, len(steps), mode))
    started = time.time()
    for step in steps:
        name = step.__name__
        ctx.changed = False
        log("==> %s" % name)
        t0 = time.time()
        try:
            if ctx.dry_run and hasattr(step, "dry_run_description"):
                ctx.would(step.dry_run_description)
                result = None
            else:
                result = step(ctx)
        except StepFailed as exc:
            elapsed = time.time() - t0
            log("!!! step '%s' failed after %.1f s: %s" % (name, elapsed, ctx.redact(exc)))
            return exc.exit_status
        except Exception as exc:  # a bug or an unexpected OS state: still name the step
            elapsed = time.time() - t0
            log(
                "!!! step '%s' failed after %.1f s: %s: %s"
                % (name, elapsed, type(exc).__name__, ctx.redact(exc))
            )
            return 1
        elapsed = time.time() - t0
        if result == "stop":
            ctx.timings.append({"step": name, "seconds": round(elapsed, 2), "result": "stop"})
            log("<== %s (%.1f s): nothing more to do" % (name, elapsed))
            break
        if result == "skipped":
            state = "skipped"
        elif ctx.dry_run:
            state = "dry-run"
        else:
            state = "changed" if ctx.changed else "unchanged"
        ctx.timings.append({"step": name, "seconds": round(elapsed, 2), "result": state})
        log("<== %s (%.1f s): %s" % (name, elapsed, state))
    changed = [t["step"] for t in ctx.timings if t["result"] == "changed"]
    log(
        "%s: done in %.1f s; %d step(s) changed something%s"
        % (title, time.time() - started, len(changed), (": " + ", ".join(changed)) if changed else "")
    )
    return 0
