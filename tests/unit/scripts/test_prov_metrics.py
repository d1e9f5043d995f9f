"""The metrics service: StatsD parsing and aggregation, the names we ship, the instance's
figures from /proc, the broker's queue over RESP, PutMetricData (against moto's server,
read back with boto3) and the serve loop over a real UDP socket."""

import datetime
import socket
import threading
import time

import pytest
from provfakes import aws_client, free_port
from provisioning.running import metrics
from provisioning.running.metrics import Aggregator, CpuSampler, Datum
from provisioning.shared.awsapi import NoMetadata

CREDS = {"access_key": "AKIDTESTTESTTEST", "secret_key": "secret", "token": None}
REGION = "eu-west-1"


def by_name(data):
    return {d.name: d for d in data}


# ---- StatsD ----


def test_every_statsd_type_is_parsed():
    agg = Aggregator()
    agg.add("a.count:2|c")
    agg.add("a.count:3|c|#dag:x,task:y")
    agg.add("sampled:1|c|@0.1")
    agg.add("level:10|g")
    agg.add("delta:5|g\ndelta:+3|g\ndelta:-1.5|g")
    agg.add("took:100|ms\ntook:300|ms")
    agg.add(b"rated:50|ms|@0.5\nrated:20|ms|@0.5\n")
    got = by_name(agg.flush())
    assert got["a.count"] == Datum("a.count", 5.0, "Count")
    assert got["sampled"].value == pytest.approx(10.0)
    assert got["level"] == Datum("level", 10.0, "None")
    assert got["delta"].value == 6.5
    assert got["took"] == Datum("took", 200.0, "Milliseconds")
    assert got["took.count"] == Datum("took.count", 2.0, "Count")
    assert got["rated"].value == pytest.approx(35.0)
    assert got["rated.count"].value == pytest.approx(4.0)
    assert agg.dropped == 0


def test_a_gauge_delta_without_a_level_starts_from_zero_and_a_negative_level_needs_a_zero_first():
    agg = Aggregator()
    agg.add("g:-4|g")
    assert by_name(agg.flush())["g"].value == -4.0
    agg.add("g:0|g\ng:-2|g")
    assert by_name(agg.flush())["g"].value == -2.0


@pytest.mark.parametrize(
    "line",
    [
        "no-colon|c",
        "x:abc|c",
        "x:1|zz",
        "x:1",
        ":1|c",
        "x:1|c|@0",
        "x:1|c|@2",
        "x:1|c|@abc",
        "x:nan|g",
        "x:inf|c",
        "x:|g",
    ],
)
def test_malformed_lines_are_dropped_and_counted(line):
    agg = Aggregator()
    agg.add(line + "\nok:1|c")
    assert agg.dropped == 1
    assert agg.flush() == [Datum("ok", 1.0, "Count")]


def test_a_flush_starts_counters_and_timers_over_and_keeps_gauges():
    agg = Aggregator()
    agg.add("c:4|c\nt:10|ms\ng:7|g")
    assert len(agg.flush()) == 4
    agg.add("c:1|c")
    assert by_name(agg.flush()) == {
        "c": Datum("c", 1.0, "Count"),
        "g": Datum("g", 7.0, "None"),
    }
    # an idle counter reads 0 (not missing data); a timer without samples has no average
    assert agg.flush() == [Datum("c", 0.0, "Count"), Datum("g", 7.0, "None")]


def test_what_is_not_accepted_is_not_kept_nor_counted_as_dropped():
    agg = Aggregator(accept=metrics.is_shipped)
    agg.add("airflow.dag.x.task.duration:3|ms\nairflow.ti_failures:1|c\nairflow.pool.open_slots.p:4|g")
    assert agg.dropped == 0
    assert agg.flush() == [Datum("airflow.ti_failures", 1.0, "Count")]


# ---- the names we ship ----


def test_only_the_named_airflow_metrics_are_shipped_under_their_cloudwatch_names():
    agg = Aggregator()
    agg.add(
        "\n".join(
            [
                "airflow.scheduler_heartbeat:1|c",
                "airflow.scheduler_heartbeat:1|c",
                "airflow.ti_failures:1|c",
                "airflow.ti_successes:3|c",
                "airflow.dag_processing.total_parse_time:2.5|g",
                "airflow.executor.queued_tasks:4|g",
                "airflow.executor.running_tasks:2|g",
                "airflow.executor.open_slots:30|g",
                "airflow.ti.finish.d.t.success:1|c",
                "airflow.ti_failures.extra:9|c",
                "other.ti_failures:5|c",
                "ti_successes:5|c",
            ]
        )
    )
    assert sorted(metrics.cloudwatch_data(agg.flush())) == sorted(
        [
            Datum("SchedulerHeartbeat", 2.0, "Count"),
            Datum("TaskFailures", 1.0, "Count"),
            Datum("TaskSuccesses", 3.0, "Count"),
            Datum("DagParseTime", 2.5, "Seconds"),
            Datum("QueuedTasks", 4.0, "Count"),
            Datum("RunningTasks", 2.0, "Count"),
            Datum("OpenSlots", 30.0, "Count"),
        ]
    )


def test_executor_suffixes_are_summed_unless_the_unsuffixed_figure_is_there():
    agg = Aggregator()
    agg.add(
        "airflow.executor.open_slots.LocalExecutor:8|g\n"
        "airflow.executor.open_slots.CeleryExecutor:16|g\n"
        "airflow.executor.queued_tasks.CeleryExecutor:3|g\n"
        "airflow.executor.queued_tasks:5|g\n"
    )
    got = by_name(metrics.cloudwatch_data(agg.flush()))
    assert got["OpenSlots"].value == 24.0
    assert got["QueuedTasks"].value == 5.0
    assert "RunningTasks" not in got


def test_a_new_metric_is_one_line_of_the_table(monkeypatch):
    monkeypatch.setitem(metrics.NAMES, "pool.open_slots", metrics.Shipped("PoolOpenSlots", "Count", True))
    agg = Aggregator(accept=metrics.is_shipped)
    agg.add("airflow.pool.open_slots.default_pool:128|g")
    assert metrics.cloudwatch_data(agg.flush()) == [Datum("PoolOpenSlots", 128.0, "Count")]


# ---- the instance ----


def fake_proc(root, stat, total_kb=8000000, available_kb=2000000):
    root.mkdir(exist_ok=True)
    (root / "stat").write_text(f"cpu  {stat}\ncpu0 1 2 3 4 5 6 7 8 0 0\nintr 1 2\n")
    (root / "meminfo").write_text(
        f"MemTotal:       {total_kb} kB\nMemFree:         100 kB\nMemAvailable:   {available_kb} kB\n"
    )
    return root


def test_cpu_is_the_busy_share_since_the_previous_reading(tmp_path):
    proc = fake_proc(tmp_path / "proc", "100 0 100 700 100 0 0 0 0 0")
    cpu = CpuSampler(str(proc))
    assert cpu.percent() is None
    # 400 more ticks: 100 idle, 100 iowait, 200 busy (user 150, system 30, steal 20)
    fake_proc(proc, "250 0 130 800 200 0 0 20 0 0")
    assert cpu.percent() == pytest.approx(50.0)
    # no tick since: nothing to say
    assert cpu.percent() is None


def test_memory_is_the_share_of_memtotal_not_available(tmp_path):
    proc = fake_proc(tmp_path / "proc", "1 1 1 1 1 0 0 0", total_kb=8000000, available_kb=2000000)
    cgroup = tmp_path / "cgroup"
    cgroup.mkdir()
    (cgroup / "memory.max").write_text("max\n")
    got = metrics.instance_figures(str(proc), str(cgroup))
    assert got == [Datum("MemoryUtilization", 75.0, "Percent")]


def test_a_cgroup_limit_above_memtotal_changes_nothing(tmp_path):
    proc = fake_proc(tmp_path / "proc", "1 1 1 1 1 0 0 0", total_kb=1000, available_kb=250)
    cgroup = tmp_path / "cgroup"
    cgroup.mkdir()
    (cgroup / "memory.max").write_text(f"{4000 * 1024}\n")
    (cgroup / "memory.current").write_text(f"{3000 * 1024}\n")
    assert metrics.memory_percent(str(proc), str(cgroup)) == 75.0


def test_a_container_limit_is_the_total_and_its_own_use_what_is_left(tmp_path):
    mib = 1024 * 1024
    proc = fake_proc(
        tmp_path / "proc", "1 1 1 1 1 0 0 0", total_kb=16 * 1024 * 1024, available_kb=12 * 1024 * 1024
    )
    cgroup = tmp_path / "cgroup"
    cgroup.mkdir()
    (cgroup / "memory.max").write_text(f"{1024 * mib}\n")
    # the host has 12 GiB available; under the 1 GiB limit: 300 MiB used, 44 MiB of it reclaimable
    (cgroup / "memory.current").write_text(f"{300 * mib}\n")
    (cgroup / "memory.stat").write_text(f"anon 1\ninactive_file {44 * mib}\nactive_file 5\n")
    assert metrics.memory_percent(str(proc), str(cgroup)) == pytest.approx(25.0)


def test_a_container_limit_without_its_use_floors_at_zero(tmp_path):
    proc = fake_proc(tmp_path / "proc", "1 1 1 1 1 0 0 0", total_kb=16000, available_kb=12000)
    cgroup = tmp_path / "cgroup"
    cgroup.mkdir()
    (cgroup / "memory.max").write_text(f"{8000 * 1024}\n")
    assert metrics.memory_percent(str(proc), str(cgroup)) == 0.0
    (cgroup / "memory.max").write_text(f"{1000 * 1024}\n")
    (cgroup / "memory.current").write_text(f"{2000 * 1024}\n")
    assert metrics.memory_percent(str(proc), str(cgroup)) == 100.0


def test_instance_figures_has_cpu_from_the_second_reading_and_skips_what_it_cannot_read(tmp_path):
    proc = fake_proc(tmp_path / "proc", "0 0 0 100 0 0 0 0")
    cpu = CpuSampler(str(proc))
    assert [d.name for d in metrics.instance_figures(str(proc), str(tmp_path), cpu=cpu)] == [
        "MemoryUtilization"
    ]
    fake_proc(proc, "100 0 0 100 0 0 0 0")
    got = by_name(metrics.instance_figures(str(proc), str(tmp_path), cpu=cpu))
    assert got["CPUUtilization"] == Datum("CPUUtilization", 100.0, "Percent")
    assert (
        metrics.instance_figures(str(tmp_path / "none"), str(tmp_path), cpu=CpuSampler("/nonexistent")) == []
    )


# ---- the broker ----


class FakeRedis:
    """One connection at a time: +OK to AUTH with ``password``, :depth to LLEN."""

    def __init__(self, password="s3cret", depth=7):
        self.password = password
        self.depth = depth
        self.commands = []
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(4)
        self.port = self.server.getsockname()[1]
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                stream = conn.makefile("rb")
                while True:
                    line = stream.readline()
                    if not line:
                        break
                    count = int(line[1:])
                    args = []
                    for _ in range(count):
                        size = int(stream.readline()[1:])
                        args.append(stream.read(size + 2)[:-2].decode())
                    self.commands.append(args)
                    conn.sendall(self.reply(args))

    def reply(self, args):
        if args[0] == "AUTH":
            return b"+OK\r\n" if args[-1] == self.password else b"-WRONGPASS invalid password\r\n"
        if args[0] == "SELECT":
            return b"+OK\r\n"
        if args[0] == "LLEN":
            return b":%d\r\n" % self.depth
        return b"-ERR unknown\r\n"

    def close(self):
        self.server.close()


@pytest.fixture
def redis():
    server = FakeRedis()
    yield server
    server.close()


def test_queue_depth_is_llen_after_auth(redis):
    assert metrics.queue_depth("127.0.0.1", redis.port, "s3cret") == 7
    assert redis.commands == [["AUTH", "s3cret"], ["LLEN", "default"]]


def test_queue_depth_authenticates_as_the_broker_s_acl_user(redis):
    assert metrics.queue_depth("127.0.0.1", redis.port, "s3cret", user="airflow-celery") == 7
    assert redis.commands == [["AUTH", "airflow-celery", "s3cret"], ["LLEN", "default"]]


def test_queue_depth_selects_another_database_and_queue(redis):
    redis.depth = 0
    assert metrics.queue_depth("127.0.0.1", redis.port, "s3cret", "critical", db=2) == 0
    assert redis.commands == [["AUTH", "s3cret"], ["SELECT", "2"], ["LLEN", "critical"]]


def test_queue_depth_is_none_when_auth_is_refused(redis):
    assert metrics.queue_depth("127.0.0.1", redis.port, "wrong") is None
    assert redis.commands == [["AUTH", "wrong"]]


def test_queue_depth_is_none_when_nothing_listens():
    assert metrics.queue_depth("127.0.0.1", free_port(), "s3cret", timeout=0.5) is None


def test_the_broker_is_read_from_celerys_url():
    assert metrics.broker_of("redis://:pa%2Fss@127.0.0.1:6379/0") == {
        "host": "127.0.0.1",
        "port": 6379,
        "password": "pa/ss",
        "queue": "default",
        "db": 0,
        "user": None,
    }
    assert metrics.broker_of("redis://airflow-celery:pw@127.0.0.1:6379/0")["user"] == "airflow-celery"
    assert metrics.broker_of("redis://10.0.0.5/3")["db"] == 3
    assert metrics.broker_of("redis://10.0.0.5")["port"] == 6379
    assert metrics.broker_of("") is None
    assert metrics.broker_of("amqp://guest@rabbit//") is None


# ---- CloudWatch ----


class RecordingCall:
    def __init__(self, fail=0):
        self.calls = []
        self.fail = fail

    def __call__(self, service, action, params, region, creds, *, version, endpoint=None, timeout=15):
        self.calls.append(
            {
                "service": service,
                "action": action,
                "params": params,
                "region": region,
                "creds": creds,
                "version": version,
                "endpoint": endpoint,
            }
        )
        if self.fail:
            self.fail -= 1
            raise OSError("monitoring PutMetricData: HTTP 500 InternalFailure")

    def data(self, index=-1):
        """The (name, value, unit, dimensions) of one call's datums."""
        params = self.calls[index]["params"]
        out, n = [], 1
        while f"MetricData.member.{n}.MetricName" in params:
            member = f"MetricData.member.{n}."
            dims, m = {}, 1
            while member + f"Dimensions.member.{m}.Name" in params:
                dims[params[member + f"Dimensions.member.{m}.Name"]] = params[
                    member + f"Dimensions.member.{m}.Value"
                ]
                m += 1
            out.append(
                (params[member + "MetricName"], params[member + "Value"], params[member + "Unit"], dims)
            )
            n += 1
        return out


def test_put_metrics_sends_batches_of_twenty_with_every_dimension():
    call = RecordingCall()
    data = [Datum(f"M{n:02d}", n, "Count") for n in range(45)]
    dims = {"InstanceId": "i-1", "Role": "standalone"}
    when = datetime.datetime(2026, 1, 2, 3, 4, 5)
    assert metrics.put_metrics(data, "Airflow", dims, REGION, CREDS, call=call, timestamp=when) == 45
    assert [len(call.data(i)) for i in range(3)] == [20, 20, 5]
    assert [c["params"]["Namespace"] for c in call.calls] == ["Airflow"] * 3
    assert {(c["service"], c["action"], c["version"]) for c in call.calls} == {
        ("monitoring", "PutMetricData", "2010-08-01")
    }
    assert call.data(2)[0] == ("M40", "40", "Count", dims)
    assert call.calls[0]["params"]["MetricData.member.1.Timestamp"] == "2026-01-02T03:04:05Z"
    assert "MetricData.member.21.MetricName" not in call.calls[0]["params"]


def test_numbers_are_plain_decimals():
    call = RecordingCall()
    data = [
        Datum("a", 3.0, "Count"),
        Datum("b", 1.5, "None"),
        Datum("c", 0.00001, "None"),
        Datum("d", 1e20, "None"),
        Datum("e", -2, "None"),
        Datum("f", 123456.789, "Percent"),
    ]
    metrics.put_metrics(data, "N", {}, REGION, CREDS, call=call)
    assert [d[1] for d in call.data()] == ["3", "1.5", "0.00001", "100000000000000000000", "-2", "123456.789"]
    assert "MetricData.member.1.Timestamp" not in call.calls[0]["params"]


def test_put_metrics_stops_at_the_first_refused_call():
    call = RecordingCall(fail=1)
    with pytest.raises(OSError, match="HTTP 500"):
        metrics.put_metrics([Datum("m", 1, "Count")] * 30, "N", {}, REGION, CREDS, call=call)
    assert len(call.calls) == 1


def test_put_metrics_lands_in_cloudwatch(endpoint):
    now = datetime.datetime.utcnow().replace(microsecond=0)
    dims = {"InstanceId": "i-0abc", "Role": "controller"}
    data = [Datum("TaskFailures", 3, "Count"), Datum("MemoryUtilization", 42.5, "Percent")]
    data += [Datum(f"Filler{n}", n, "Count") for n in range(25)]
    metrics.put_metrics(data, "AirflowTest", dims, REGION, CREDS, endpoint=endpoint, timestamp=now)
    cw = aws_client("cloudwatch", endpoint)
    listed = cw.list_metrics(Namespace="AirflowTest")["Metrics"]
    assert {m["MetricName"] for m in listed} == {d.name for d in data}
    assert all(
        sorted((d["Name"], d["Value"]) for d in m["Dimensions"])
        == [("InstanceId", "i-0abc"), ("Role", "controller")]
        for m in listed
    )
    window = {
        "StartTime": now - datetime.timedelta(minutes=5),
        "EndTime": now + datetime.timedelta(minutes=5),
    }
    stats = cw.get_metric_statistics(
        Namespace="AirflowTest",
        MetricName="MemoryUtilization",
        Dimensions=[{"Name": k, "Value": v} for k, v in dims.items()],
        Period=60,
        Statistics=["Maximum"],
        **window,
    )["Datapoints"]
    assert [(p["Maximum"], p["Unit"]) for p in stats] == [(42.5, "Percent")]


# ---- the service ----


class FakeImds:
    def __init__(self, creds=CREDS, instance_id="i-0123", region=REGION, error=None):
        self.creds = creds
        self.meta = {"meta-data/instance-id": instance_id, "meta-data/placement/region": region}
        self.error = error
        self.asked = []

    def get(self, path):
        self.asked.append(path)
        return self.meta.get(path)

    def role_credentials(self):
        if self.error:
            raise self.error
        return self.creds


SETTINGS = {"region": "us-east-1", "aws_endpoint_url": "", "cloudwatch_metrics": True}


def start_serving(sock, imds, call, tmp_path, **kw):
    proc = fake_proc(tmp_path / "proc", "0 0 0 100 0 0 0 0")
    result = {}

    def run():
        result["flushes"] = metrics.serve(
            SETTINGS,
            "standalone",
            sock=sock,
            imds=lambda: imds,
            call=call,
            proc_root=str(proc),
            cgroup_root=str(tmp_path),
            **kw,
        )

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


def test_serve_ships_what_came_over_udp_at_each_flush(tmp_path):
    sock = metrics.bind_statsd(0)
    port = sock.getsockname()[1]
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for datagram in (
        b"airflow.ti_failures:1|c",
        b"airflow.ti_failures:1|c",
        b"airflow.executor.open_slots:16|g",
        b"airflow.dag.x.duration:5|ms",
        b"garbage",
    ):
        sender.sendto(datagram, ("127.0.0.1", port))
    sender.close()
    imds, call = FakeImds(), RecordingCall()
    thread, result = start_serving(sock, imds, call, tmp_path, interval=0.2, max_flushes=2)
    thread.join(5)
    sock.close()
    assert not thread.is_alive()
    assert result["flushes"] == 2
    dims = {"InstanceId": "i-0123", "Role": "standalone"}
    first = {name: (value, unit) for name, value, unit, d in call.data(0) if d == dims}
    assert first == {
        "TaskFailures": ("2", "Count"),
        "OpenSlots": ("16", "Count"),
        "MemoryUtilization": ("75", "Percent"),
    }
    second = {name: value for name, value, _, _ in call.data(1)}
    assert second == {"TaskFailures": "0", "OpenSlots": "16", "MemoryUtilization": "75"}
    assert {(c["region"], c["endpoint"], c["params"]["Namespace"]) for c in call.calls} == {
        (REGION, None, "Airflow")
    }


def test_serve_stops_when_told_and_closes_its_own_socket(tmp_path, monkeypatch):
    monkeypatch.setattr(metrics, "POLL_SECONDS", 0.05)
    port = free_port()
    stop = threading.Event()
    call = RecordingCall()
    thread, result = start_serving(None, FakeImds(), call, tmp_path, port=port, interval=60, stop=stop)
    time.sleep(0.2)
    stop.set()
    thread.join(2)
    assert not thread.is_alive()
    assert result["flushes"] == 0
    assert call.calls == []
    metrics.bind_statsd(port).close()  # free again


def test_serve_ships_the_broker_queue_depth_on_a_controller(tmp_path, redis):
    sock = metrics.bind_statsd(0)
    call = RecordingCall()
    broker = metrics.broker_of(f"redis://:s3cret@127.0.0.1:{redis.port}/0")
    thread, _result = start_serving(
        sock, FakeImds(), call, tmp_path, interval=0.05, max_flushes=1, broker=broker
    )
    thread.join(5)
    sock.close()
    assert ("BrokerQueueDepth", "7", "Count") in [d[:3] for d in call.data()]


def test_a_controller_s_queue_depth_is_also_its_cluster_s_series(tmp_path, redis):
    sock = metrics.bind_statsd(0)
    call = RecordingCall()
    broker = metrics.broker_of(f"redis://:s3cret@127.0.0.1:{redis.port}/0")
    thread, _result = start_serving(
        sock, FakeImds(), call, tmp_path, interval=0.05, max_flushes=1, broker=broker, cluster="analytics"
    )
    thread.join(5)
    sock.close()
    shipped = [d for n in range(len(call.calls)) for d in call.data(n)]
    assert [d[:3] for d in shipped if d[3] == {"Cluster": "analytics"}] == [
        ("BrokerQueueDepth", "7", "Count")
    ]
    assert ("BrokerQueueDepth", "7", "Count") in [
        d[:3] for d in shipped if d[3] == {"InstanceId": "i-0123", "Role": "standalone"}
    ]


def test_an_image_baked_without_metrics_ships_none(capsys):
    settings = {**SETTINGS, "cloudwatch_metrics": False}
    assert metrics.main(type("Ctx", (), {"settings": settings})()) == 0
    assert "cloudwatch_metrics is off" in capsys.readouterr().out


def test_an_instance_without_a_role_logs_and_drops(tmp_path, capsys):
    sock = metrics.bind_statsd(0)
    call = RecordingCall()
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.sendto(b"airflow.ti_failures:1|c", sock.getsockname())
    sender.close()
    thread, result = start_serving(sock, FakeImds(creds=None), call, tmp_path, interval=0.05, max_flushes=2)
    thread.join(5)
    sock.close()
    assert result["flushes"] == 2
    assert call.calls == []
    lines = [line for line in capsys.readouterr().out.splitlines() if "metrics:" in line]
    assert len(lines) == 2
    assert all("no IAM role" in line and "dropped" in line for line in lines)


def test_a_refused_put_is_logged_and_its_figures_not_carried_over(tmp_path, capsys):
    proc = fake_proc(tmp_path / "proc", "0 0 0 100 0 0 0 0")
    call = RecordingCall(fail=1)
    shipper = metrics.Shipper(
        SETTINGS, "worker", imds=FakeImds, call=call, proc_root=str(proc), cgroup_root=str(tmp_path)
    )
    agg = Aggregator(accept=metrics.is_shipped)
    agg.add("airflow.ti_successes:4|c")
    assert shipper.flush(agg) is False
    assert "PutMetricData failed" in capsys.readouterr().out
    agg.add("airflow.ti_successes:1|c")
    assert shipper.flush(agg) is True
    assert ("TaskSuccesses", "1", "Count") in [d[:3] for d in call.data()]
    assert call.data()[0][3] == {"InstanceId": "i-0123", "Role": "worker"}


def test_missing_metadata_is_logged_and_dropped(tmp_path, capsys):
    call = RecordingCall()
    shipper = metrics.Shipper(
        SETTINGS,
        "standalone",
        imds=lambda: FakeImds(error=NoMetadata("no token")),
        call=call,
        proc_root=str(fake_proc(tmp_path / "proc", "0 0 0 1 0")),
        cgroup_root=str(tmp_path),
    )
    assert shipper.flush(Aggregator()) is False
    assert call.calls == []
    assert "no instance metadata (no token)" in capsys.readouterr().out


def test_the_endpoint_and_the_region_fallback_come_from_the_settings(tmp_path):
    call = RecordingCall()
    imds = FakeImds(region=None)
    settings = {"region": "ap-south-1", "aws_endpoint_url": "http://cloud.local:4566"}
    shipper = metrics.Shipper(
        settings,
        "standalone",
        imds=lambda: imds,
        call=call,
        proc_root=str(fake_proc(tmp_path / "proc", "0 0 0 1 0")),
        cgroup_root=str(tmp_path),
    )
    assert shipper.ship([Datum("X", 1, "Count")]) is True
    assert (call.calls[0]["region"], call.calls[0]["endpoint"]) == ("ap-south-1", "http://cloud.local:4566")


def test_serve_puts_into_cloudwatch_end_to_end(tmp_path, endpoint):
    sock = metrics.bind_statsd(0)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.sendto(b"airflow.ti_failures:1|c\nairflow.scheduler_heartbeat:1|c", sock.getsockname())
    sender.sendto(b"airflow.ti_failures:1|c", sock.getsockname())
    sender.close()
    proc = fake_proc(tmp_path / "proc", "0 0 0 100 0 0 0 0")
    flushes = metrics.serve(
        {"region": REGION, "aws_endpoint_url": endpoint},
        "controller",
        namespace="AirflowServe",
        sock=sock,
        interval=0.1,
        max_flushes=1,
        imds=lambda: FakeImds(instance_id="i-0e2e"),
        proc_root=str(proc),
        cgroup_root=str(tmp_path),
    )
    sock.close()
    assert flushes == 1
    cw = aws_client("cloudwatch", endpoint)
    names = {m["MetricName"] for m in cw.list_metrics(Namespace="AirflowServe")["Metrics"]}
    assert names == {"TaskFailures", "SchedulerHeartbeat", "MemoryUtilization"}
    now = datetime.datetime.utcnow()
    stats = cw.get_metric_statistics(
        Namespace="AirflowServe",
        MetricName="TaskFailures",
        Dimensions=[{"Name": "InstanceId", "Value": "i-0e2e"}, {"Name": "Role", "Value": "controller"}],
        StartTime=now - datetime.timedelta(minutes=5),
        EndTime=now + datetime.timedelta(minutes=5),
        Period=300,
        Statistics=["Sum"],
    )["Datapoints"]
    assert [(p["Sum"], p["Unit"]) for p in stats] == [(2.0, "Count")]


def test_main_says_so_when_the_statsd_port_is_taken(monkeypatch, capsys):
    taken = metrics.bind_statsd(0)
    port = taken.getsockname()[1]
    monkeypatch.setattr(metrics, "STATSD_PORT", port)
    try:
        assert metrics.main(type("Ctx", (), {"settings": SETTINGS})()) == 1
    finally:
        taken.close()
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().out


def test_a_flush_slower_than_the_interval_is_followed_by_a_whole_interval(tmp_path, monkeypatch):
    monkeypatch.setattr(metrics, "POLL_SECONDS", 0.01)  # the fake clock stands still while recv waits
    ticks = iter([0.0, 1.0, 5.0, 5.0, 5.0, 6.0, 7.0])
    flushed_at = []
    sock = metrics.bind_statsd(0)

    class SlowCall(RecordingCall):
        def __call__(self, *args, **kw):
            flushed_at.append(now[0])
            return super().__call__(*args, **kw)

    now = [0.0]

    def clock():
        now[0] = next(ticks)
        return now[0]

    metrics.serve(
        SETTINGS,
        "standalone",
        sock=sock,
        interval=1.0,
        max_flushes=2,
        clock=clock,
        imds=FakeImds,
        call=SlowCall(),
        proc_root=str(fake_proc(tmp_path / "proc", "0 0 0 1 0")),
        cgroup_root=str(tmp_path),
    )
    sock.close()
    # the first flush (at 1) ended at 5: the next is due at 6, not at once
    assert flushed_at == [1.0, 6.0]
