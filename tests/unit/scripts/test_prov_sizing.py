import pytest
from provisioning.sizing import (
    MAX_PARALLELISM,
    MIN_PARALLELISM,
    mem_mib_from_meminfo,
    parallelism_for,
    resolve_parallelism,
)


@pytest.mark.parametrize(
    ("cpus", "mem", "expected"),
    [
        (2, 8192, 16),  # CPU-bound: 2 x 8
        (2, 4096, 10),  # memory-bound: (4096 - 1536) // 256
        (1, 1024, MIN_PARALLELISM),  # t3.micro: still parallel
        (96, 786432, MAX_PARALLELISM),
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
