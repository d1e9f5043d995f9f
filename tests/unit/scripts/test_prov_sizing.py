import pytest
from provisioning.boot.sizing import (
    MAX_API_WORKERS,
    MAX_AUTO_PARALLELISM,
    MAX_BUFFER_POOL_MIB,
    MIN_BROKER_MIB,
    MIN_BUFFER_POOL_MIB,
    MIN_PARALLELISM,
    api_workers_for,
    broker_memory_mib_for,
    buffer_pool_mib_for,
    mem_mib_from_meminfo,
    memory_limit_mib,
    parallelism_for,
    resolve_parallelism,
)


@pytest.mark.parametrize(
    ("cpus", "mem", "expected"),
    [
        (2, 8192, 16),  # CPU-bound: 2 x 8
        (2, 4096, 10),  # memory-bound: (4096 - 1536) // 256
        (1, 1024, MIN_PARALLELISM),  # t3.micro: still parallel
        (96, 786432, MAX_AUTO_PARALLELISM),
    ],
)
def test_parallelism_for_cpu_and_memory(cpus, mem, expected):
    assert parallelism_for(cpus, mem) == expected


def test_more_memory_or_cpus_never_means_fewer_slots():
    for cpus in (1, 2, 4, 8):
        values = [parallelism_for(cpus, mem) for mem in range(512, 65536, 512)]
        assert values == sorted(values)


def test_auto_sizes_and_integer_pins():
    assert resolve_parallelism("auto", 2, 8192) == 16
    assert resolve_parallelism("AUTO", 2, 8192) == 16
    assert resolve_parallelism(5, 96, 786432) == 5
    assert resolve_parallelism("7", 1, 1024) == 7


@pytest.mark.parametrize("bad", ["0", -1, "lots"])
def test_bad_parallelism_is_refused(bad):
    with pytest.raises(ValueError):
        resolve_parallelism(bad, 2, 8192)


def test_meminfo_parse():
    text = "MemTotal:        8041288 kB\nMemFree:         1234 kB\n"
    assert mem_mib_from_meminfo(text) == 7852
    with pytest.raises(ValueError):
        mem_mib_from_meminfo("MemFree: 1 kB\n")


@pytest.mark.parametrize(
    ("cpus", "mem", "workers", "pool"),
    [
        (2, 1024, 1, MIN_BUFFER_POOL_MIB),  # t3.micro
        (2, 7852, 1, 384),  # t3.large: MemTotal a little under 8 GiB
        (4, 15800, 2, 896),  # m5.xlarge
        (8, 31700, 4, 1920),  # m5.2xlarge
        (2, 24105, 1, 1408),  # 2 CPUs: more memory buys no second worker
        (8, 7852, 1, 384),  # c5.2xlarge-like: memory-bound
        (96, 786432, MAX_API_WORKERS, MAX_BUFFER_POOL_MIB),
    ],
)
def test_api_workers_follow_cpus_and_memory_and_the_buffer_pool_memory(cpus, mem, workers, pool):
    assert api_workers_for(cpus, mem) == workers
    assert buffer_pool_mib_for(mem) == pool
    assert pool % 128 == 0


@pytest.mark.parametrize(("mem", "broker"), [(7852, 981), (512, MIN_BROKER_MIB), (31700, 3962)])
def test_the_broker_s_memory_is_an_eighth_of_the_instance_s(mem, broker):
    assert broker_memory_mib_for(mem) == broker


def test_a_container_s_memory_is_its_cgroup_limit_not_the_host_s():
    host = "MemTotal:       24683520 kB\n"
    assert memory_limit_mib(host, ["8589934592\n"]) == 8192
    assert memory_limit_mib(host, ["max\n"]) == 24105
    assert memory_limit_mib(host, ["9223372036854771712\n"]) == 24105  # cgroup v1: no limit
    assert memory_limit_mib(host, []) == 24105
