"""`provision.py metrics` (airflow-metrics.service): Airflow's StatsD metrics and the
instance's own figures, in Amazon CloudWatch.

Airflow sends StatsD datagrams to 127.0.0.1:STATSD_PORT; this program aggregates them
and, every ``interval`` seconds, puts the few we ship (NAMES), the instance's CPU and
memory use and, on a cluster's controller, the Celery broker's queue depth with
PutMetricData, dimensions InstanceId and Role. Credentials come from the instance role
at each flush (they rotate). Whatever cannot be sent is logged in one line and dropped:
a flush never carries over into the next, so nothing piles up while CloudWatch or the
role is missing.
"""

import collections
import datetime
import decimal
import json
import math
import os
import signal
import socket
import threading
import time
from urllib.parse import unquote, urlsplit

from ..shared import contract
from ..shared import layout as L
from ..shared.airflowenv import BROKER_URL_VARIABLE, recorded_role
from ..shared.awsapi import Imds, NoMetadata, query_call
from ..shared.envfile import read_env_file
from ..shared.runner import log

STATSD_PORT = L.STATSD_PORT
NAMESPACE = contract.METRICS_NAMESPACE
FLUSH_SECONDS = 60
AIRFLOW_PREFIX = L.STATSD_PREFIX + "."
# The most datums one PutMetricData call takes here.
BATCH_SIZE = 20
# The longest the loop waits on the socket: a stop is seen within this.
POLL_SECONDS = 1.0
CELERY_QUEUE = contract.DEFAULT_QUEUES[0]
MONITORING_VERSION = "2010-08-01"

Datum = collections.namedtuple("Datum", "name value unit")

# What we ship of Airflow's metrics: its name (prefix stripped) -> the CloudWatch name and unit.
# per_executor: Airflow 3 may name the executor after the metric (executor.open_slots.LocalExecutor);
# the unsuffixed figure wins, else the suffixed ones are summed.
Shipped = collections.namedtuple("Shipped", "metric unit per_executor")
NAMES = {
    "executor.queued_tasks": Shipped("QueuedTasks", "Count", True),
    "executor.running_tasks": Shipped("RunningTasks", "Count", True),
    "executor.open_slots": Shipped("OpenSlots", "Count", True),
    "scheduler_heartbeat": Shipped("SchedulerHeartbeat", "Count", False),
    "dag_processing.total_parse_time": Shipped("DagParseTime", "Seconds", False),
    "ti_failures": Shipped("TaskFailures", "Count", False),
    "ti_successes": Shipped("TaskSuccesses", "Count", False),
}


# ---- StatsD ----


class Aggregator(object):
    """StatsD lines in, one flush's figures out (pure).

    A counter seen once is reported (as 0 when idle) at every later flush, as StatsD
    does, so an alarm on it sees a figure rather than missing data.
    """

    def __init__(self, accept=None):
        """``accept(name)``: whether to keep a metric at all (the rest costs no memory)."""
        self.accept = accept
        self.counters = {}
        self.gauges = {}
        self.timers = {}  # name -> [sum of values, samples]
        self.dropped = 0

    def add(self, text):
        """One datagram: lines ``name:value|type[|@rate][|#tags]``."""
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        for raw in text.split("\n"):
            line = raw.strip()
            if line and not self._add_line(line):
                self.dropped += 1

    def _add_line(self, line):
        fields = line.split("|")
        name, sep, value = fields[0].partition(":")
        if not sep or not name or len(fields) < 2:
            return False
        kind, rate = fields[1], 1.0
        for extra in fields[2:]:
            if extra.startswith("@"):
                rate = _number(extra[1:])
                if rate is None or not 0 < rate <= 1:
                    return False
        number = _number(value)
        if number is None or kind not in ("c", "g", "ms"):
            return False
        if self.accept is not None and not self.accept(name):
            return True
        if kind == "c":
            self.counters[name] = self.counters.get(name, 0.0) + number / rate
        elif kind == "g":
            # A sign makes a gauge's value a change, not a level (StatsD).
            if value.startswith(("+", "-")):
                number += self.gauges.get(name, 0.0)
            self.gauges[name] = number
        else:
            timer = self.timers.setdefault(name, [0.0, 0.0])
            timer[0] += number / rate
            timer[1] += 1 / rate
        return True

    def flush(self):
        """What came since the last flush: a list of Datum; counters and timers start over."""
        data = [Datum(name, total, "Count") for name, total in sorted(self.counters.items())]
        for name, (total, samples) in sorted(self.timers.items()):
            data.append(Datum(name, total / samples, "Milliseconds"))
            data.append(Datum(name + ".count", samples, "Count"))
        data += [Datum(name, value, "None") for name, value in sorted(self.gauges.items())]
        self.counters = dict.fromkeys(self.counters, 0.0)
        self.timers = {}
        return data


def _number(text):
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _shipped_entry(name):
    """(Airflow name, Shipped, exact) of a StatsD name we ship, or None."""
    if not name.startswith(AIRFLOW_PREFIX):
        return None
    name = name[len(AIRFLOW_PREFIX) :]
    if name in NAMES:
        return name, NAMES[name], True
    base, _, suffix = name.rpartition(".")
    entry = NAMES.get(base)
    if entry is not None and entry.per_executor and suffix:
        return base, entry, False
    return None


def is_shipped(name):
    return _shipped_entry(name) is not None


def cloudwatch_data(data):
    """The Datum of an Aggregator's flush that we ship, under their CloudWatch names and units."""
    exact, suffixed = {}, {}
    for datum in data:
        found = _shipped_entry(datum.name)
        if found is None:
            continue
        base, _, is_exact = found
        if is_exact:
            exact[base] = datum.value
        else:
            suffixed[base] = suffixed.get(base, 0.0) + datum.value
    out = []
    for base, entry in NAMES.items():
        value = exact.get(base, suffixed.get(base))
        if value is not None:
            out.append(Datum(entry.metric, value, entry.unit))
    return out


# ---- the instance ----


class CpuSampler(object):
    """CPU busy % between two readings of /proc/stat."""

    def __init__(self, proc_root="/proc"):
        self.proc_root = proc_root
        self._last = None

    def percent(self):
        """Busy % since the previous call; None at the first (or when /proc/stat is unreadable)."""
        try:
            with open(os.path.join(self.proc_root, "stat")) as fh:
                fields = fh.readline().split()
            # user nice system idle iowait irq softirq steal (guest time is inside user and nice)
            ticks = [int(f) for f in fields[1:9]]
        except (OSError, ValueError):
            return None
        if fields[0] != "cpu" or len(ticks) < 5:
            return None
        total, idle = sum(ticks), ticks[3] + ticks[4]
        last, self._last = self._last, (total, idle)
        if last is None or total <= last[0]:
            return None
        elapsed = total - last[0]
        busy = elapsed - (idle - last[1])
        return max(0.0, min(100.0, 100.0 * busy / elapsed))


def _meminfo(proc_root):
    values = {}
    with open(os.path.join(proc_root, "meminfo")) as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts:
                values[key] = int(parts[0]) * 1024
    return values


def _read_int(path):
    try:
        with open(path) as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        return None  # absent, or "max"


def _cgroup_working_set(cgroup_root):
    """Bytes the cgroup uses less its reclaimable page cache (what the OOM killer counts)."""
    current = _read_int(os.path.join(cgroup_root, "memory.current"))
    if current is None:
        return None
    inactive = 0
    try:
        with open(os.path.join(cgroup_root, "memory.stat")) as fh:
            for line in fh:
                key, _, value = line.partition(" ")
                if key == "inactive_file":
                    inactive = int(value)
    except (OSError, ValueError):
        pass
    return max(0, current - inactive)


def memory_percent(proc_root="/proc", cgroup_root="/sys/fs/cgroup"):
    """Memory used %: of MemTotal, or of a container's cgroup limit when that is lower."""
    try:
        info = _meminfo(proc_root)
        total, available = info["MemTotal"], info["MemAvailable"]
    except (OSError, KeyError, ValueError):
        return None
    limit = _read_int(os.path.join(cgroup_root, "memory.max"))
    if limit is not None and 0 < limit < total:
        total = limit
        # /proc/meminfo speaks of the host: the cgroup's own use says what is left under the limit.
        working_set = _cgroup_working_set(cgroup_root)
        if working_set is not None:
            available = min(available, limit - working_set)
    if total <= 0:
        return None
    used = max(0, total - available)
    return min(100.0, 100.0 * used / total)


def instance_figures(proc_root="/proc", cgroup_root="/sys/fs/cgroup", cpu=None):
    """CPUUtilization (with ``cpu``, a CpuSampler: since its previous reading) and
    MemoryUtilization, in percent; a figure that cannot be read is left out."""
    data = []
    busy = cpu.percent() if cpu is not None else None
    if busy is not None:
        data.append(Datum("CPUUtilization", busy, "Percent"))
    used = memory_percent(proc_root, cgroup_root)
    if used is not None:
        data.append(Datum("MemoryUtilization", used, "Percent"))
    return data


# ---- the broker ----


def _resp_command(*args):
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode("utf-8")
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _resp_reply(stream):
    """One simple reply: ('+'|'-'|':', text); a bulk or array reply is not expected here."""
    line = stream.readline()
    if not line.endswith(b"\r\n"):
        raise OSError("connection closed")
    return line[:1].decode("ascii", "replace"), line[1:-2].decode("utf-8", "replace")


def queue_depth(host, port, password, queue=CELERY_QUEUE, *, timeout=2, db=0, user=None):
    """How many messages wait in the Celery broker's ``queue`` (Redis LLEN); None when
    Redis cannot be reached or refuses. Never raises."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            stream = sock.makefile("rb")
            commands = []
            if password:
                commands.append(("+", _resp_command("AUTH", *([user] if user else []), password)))
            if db:
                commands.append(("+", _resp_command("SELECT", db)))
            commands.append((":", _resp_command("LLEN", queue)))
            for expected, command in commands:
                sock.sendall(command)
                kind, text = _resp_reply(stream)
                if kind != expected:
                    return None
            return int(text)
    except (OSError, ValueError):
        return None


def broker_of(url, queue=CELERY_QUEUE):
    """queue_depth's arguments for a Celery broker URL (redis://[user]:password@host:port/db), or None."""
    try:
        parts = urlsplit(url or "")
        port = parts.port or L.REDIS_PORT
        db = int(parts.path.strip("/") or 0)
    except ValueError:
        return None
    if parts.scheme != "redis" or not parts.hostname:
        return None
    password = unquote(parts.password) if parts.password else None
    user = unquote(parts.username) if parts.username else None
    return {
        "host": parts.hostname,
        "port": port,
        "password": password,
        "queue": queue,
        "db": db,
        "user": user,
    }


# ---- CloudWatch ----


def _plain(value):
    """A number as CloudWatch's Query API takes it: plain decimal, no exponent."""
    text = format(decimal.Decimal(repr(float(value))), "f")
    return text[:-2] if text.endswith(".0") else text


def metric_params(data, dimensions, timestamp=None):
    """PutMetricData's MetricData.member.N.* parameters of ``data`` (each with every dimension)."""
    params = {}
    for n, datum in enumerate(data, 1):
        member = "MetricData.member.%d." % n
        params[member + "MetricName"] = datum.name
        params[member + "Value"] = _plain(datum.value)
        params[member + "Unit"] = datum.unit
        if timestamp is not None:
            params[member + "Timestamp"] = timestamp.strftime("%Y-%m-%dT%H:%M:%SZ")
        for m, (name, value) in enumerate(dimensions.items(), 1):
            params[member + "Dimensions.member.%d.Name" % m] = name
            params[member + "Dimensions.member.%d.Value" % m] = str(value)
    return params


def put_metrics(
    data, namespace, dimensions, region, creds, *, endpoint=None, call=query_call, timestamp=None
):
    """PutMetricData, BATCH_SIZE datums a call; raises OSError at the first call refused.
    ``timestamp``: a UTC datetime for every datum (CloudWatch's receipt time without)."""
    data = list(data)
    for start in range(0, len(data), BATCH_SIZE):
        params = metric_params(data[start : start + BATCH_SIZE], dimensions, timestamp)
        params["Namespace"] = namespace
        call(
            "monitoring",
            "PutMetricData",
            params,
            region,
            creds,
            version=MONITORING_VERSION,
            endpoint=endpoint,
        )
    return len(data)


# ---- the service ----


def bind_statsd(port=STATSD_PORT, host="127.0.0.1"):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


class Shipper(object):
    """One flush: gather, ask IMDS for the role's credentials, put; drop on any failure."""

    def __init__(
        self,
        settings,
        role,
        *,
        namespace=NAMESPACE,
        broker=None,
        cluster=None,
        imds=Imds,
        call=query_call,
        proc_root="/proc",
        cgroup_root="/sys/fs/cgroup",
        now=datetime.datetime.utcnow,
    ):
        self.settings = settings
        self.role = role
        self.namespace = namespace
        self.broker = broker
        self.cluster = cluster
        self.imds = imds
        self.call = call
        self.proc_root = proc_root
        self.cgroup_root = cgroup_root
        self.now = now
        self.cpu = CpuSampler(proc_root)
        self.cpu.percent()  # a first reading, so the first flush has a CPU figure
        self.instance_id = None
        self.region = None

    def gather(self, aggregator):
        data = cloudwatch_data(aggregator.flush())
        data += instance_figures(self.proc_root, self.cgroup_root, cpu=self.cpu)
        if self.broker:
            depth = queue_depth(**self.broker)
            if depth is not None:
                data.append(Datum(contract.QUEUE_DEPTH_METRIC, depth, "Count"))
        return data

    def ship(self, data):
        """Put ``data``; True when CloudWatch took it, False when it was dropped (logged)."""
        if not data:
            return True
        try:
            # A new client each time: an IMDSv2 token expires, and the role's keys rotate.
            imds = self.imds()
            creds = imds.role_credentials()
            if self.instance_id is None:
                self.region = imds.get("meta-data/placement/region") or self.settings["region"]
                self.instance_id = imds.get("meta-data/instance-id")
        except (NoMetadata, ValueError, KeyError) as exc:
            log("metrics: no instance metadata (%s): %d figure(s) dropped" % (exc, len(data)))
            return False
        if not creds:
            log("metrics: the instance has no IAM role: %d figure(s) dropped" % len(data))
            return False
        if not self.instance_id:
            log("metrics: IMDS names no instance id: %d figure(s) dropped" % len(data))
            return False
        # The queue depth is also the cluster's own series, whichever instance is its
        # controller now: the one the workers' scaling policy tracks.
        series = [({"InstanceId": self.instance_id, "Role": self.role}, data)]
        depth = [d for d in data if d.name == contract.QUEUE_DEPTH_METRIC]
        if self.cluster and depth:
            series.append(({contract.CLUSTER_DIMENSION: self.cluster}, depth))
        try:
            for dimensions, datums in series:
                put_metrics(
                    datums,
                    self.namespace,
                    dimensions,
                    self.region,
                    creds,
                    endpoint=self.settings["aws_endpoint_url"] or None,
                    call=self.call,
                    timestamp=self.now(),
                )
        except OSError as exc:
            log("metrics: PutMetricData failed, %d figure(s) dropped: %s" % (len(data), exc))
            return False
        return True

    def flush(self, aggregator):
        try:
            return self.ship(self.gather(aggregator))
        except Exception as exc:  # one bad minute must not end the service
            log("metrics: flush failed, its figures dropped: %s: %s" % (type(exc).__name__, exc))
            return False


def serve(
    settings,
    role,
    *,
    namespace=NAMESPACE,
    broker=None,
    interval=FLUSH_SECONDS,
    sock=None,
    port=STATSD_PORT,
    stop=None,
    max_flushes=None,
    clock=time.monotonic,
    **shipper_options,
):
    """Listen for StatsD on 127.0.0.1:``port`` (or on ``sock``, already bound) and ship a
    flush every ``interval`` seconds until ``stop`` (a threading.Event) is set or
    ``max_flushes`` flushes are done. ``shipper_options``: Shipper's imds, call,
    proc_root, cgroup_root, now. Returns the number of flushes."""
    stop = stop or threading.Event()
    own_socket = sock is None
    if own_socket:
        sock = bind_statsd(port)
    shipper = Shipper(settings, role, namespace=namespace, broker=broker, **shipper_options)
    aggregator = Aggregator(accept=is_shipped)
    flushes = 0
    deadline = clock() + interval
    try:
        while not stop.is_set():
            remaining = deadline - clock()
            if remaining <= 0:
                shipper.flush(aggregator)
                flushes += 1
                if max_flushes is not None and flushes >= max_flushes:
                    break
                deadline += interval
                if deadline <= clock():
                    # the flush outlasted the interval (a slow CloudWatch): a whole one from now
                    deadline = clock() + interval
                continue
            sock.settimeout(min(remaining, POLL_SECONDS))
            try:
                datagram = sock.recv(65535)
            except socket.timeout:
                continue
            aggregator.add(datagram)
    finally:
        if own_socket:
            sock.close()
    return flushes


def broker_url():
    """The controller's broker URL: from the unit's environment, else secrets.env."""
    url = os.environ.get(BROKER_URL_VARIABLE)
    if url:
        return url
    try:
        return read_env_file(L.SECRETS_ENV).get(BROKER_URL_VARIABLE)
    except OSError:
        return None


def cluster_of_this_controller():
    """The cluster this controller serves (first boot's DEPLOYMENT_RECORD: a cluster is its
    deployment), None when unreadable."""
    try:
        with open(L.DEPLOYMENT_RECORD) as fh:
            return json.load(fh).get("deployment") or None
    except (OSError, ValueError):
        return None


def main(ctx, namespace=NAMESPACE, interval=FLUSH_SECONDS):
    """Serve until SIGTERM; 1 when the StatsD port cannot be had, 0 at once when the image
    ships no metrics (cloudwatch_metrics false)."""
    if not ctx.settings["cloudwatch_metrics"]:
        log("metrics: cloudwatch_metrics is off in this image: nothing to ship")
        return 0
    role = recorded_role() or "standalone"
    broker = cluster = None
    if role == "controller":
        broker, cluster = broker_of(broker_url()), cluster_of_this_controller()
        if broker is None:
            log("metrics: no broker URL readable: %s is not shipped" % contract.QUEUE_DEPTH_METRIC)
    try:
        sock = bind_statsd(STATSD_PORT)
    except OSError as exc:
        log("!!! metrics: cannot listen on 127.0.0.1:%d: %s" % (STATSD_PORT, exc))
        return 1
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    log(
        "metrics: StatsD on 127.0.0.1:%d, to CloudWatch %s every %d s as a %s"
        % (STATSD_PORT, namespace, interval, role)
    )
    try:
        serve(
            ctx.settings,
            role,
            namespace=namespace,
            broker=broker,
            cluster=cluster,
            interval=interval,
            sock=sock,
            stop=stop,
        )
    finally:
        sock.close()
    return 0
