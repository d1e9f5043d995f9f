"""Size Airflow and MySQL to the instance: its CPUs and its memory (pure)."""

# A LocalExecutor task is a forked Python process with Airflow imported: budget for it.
MIB_PER_TASK = 256
# MySQL, the api-server, scheduler, dag-processor, triggerer and the OS.
RESERVED_MIB = 1536
TASKS_PER_CPU = 8
MIN_PARALLELISM = 4
# What "auto" sizes to at most (a pinned parallelism may ask for up to contract.MAX_PARALLELISM).
MAX_AUTO_PARALLELISM = 128
# An api-server worker is a whole Airflow web app, about 275 MB resident, and busy with
# CPU when tasks call it: one per 8 GiB and per 2 CPUs.
API_WORKER_MIB = 8192
CPUS_PER_API_WORKER = 2
MAX_API_WORKERS = 4
# InnoDB's buffer pool: a sixteenth of memory, from MySQL's own 128 MiB default to 2 GiB.
# Airflow's metadata is small, and the pool takes memory only as it reads pages.
MIN_BUFFER_POOL_MIB = 128
MAX_BUFFER_POOL_MIB = 2048
BUFFER_POOL_CHUNK_MIB = 128
# The broker's memory floor (broker_memory_mib_for).
MIN_BROKER_MIB = 64


def parallelism_for(cpus, mem_mib):
    """Task slots for ``cpus`` CPUs and ``mem_mib`` MiB of RAM.

    Airflow tasks mostly wait (on I/O, on remote systems), so CPU allows several per
    core; memory is the hard limit.  Never below MIN_PARALLELISM so a small instance
    still runs tasks in parallel, never above MAX_AUTO_PARALLELISM.
    """
    cpus = max(1, int(cpus))
    by_cpu = cpus * TASKS_PER_CPU
    by_mem = (int(mem_mib) - RESERVED_MIB) // MIB_PER_TASK
    return max(MIN_PARALLELISM, min(by_cpu, by_mem, MAX_AUTO_PARALLELISM))


def resolve_parallelism(setting, cpus, mem_mib):
    """The ``parallelism`` setting: "auto" sizes to the instance, an integer pins it."""
    if str(setting).strip().lower() == "auto":
        return parallelism_for(cpus, mem_mib)
    value = int(setting)
    if value < 1:
        raise ValueError("parallelism must be >= 1 or 'auto', got %r" % setting)
    return value


def api_workers_for(cpus, mem_mib):
    """api-server workers: 1 on a t3.large (2 CPUs, 8 GiB), 2 on 4 CPUs and 16 GiB, at most
    MAX_API_WORKERS. MemTotal is a little under the nominal size, hence rounding."""
    by_mem = round(int(mem_mib) / API_WORKER_MIB)
    by_cpu = int(cpus) // CPUS_PER_API_WORKER
    return max(1, min(MAX_API_WORKERS, by_mem, by_cpu))


def buffer_pool_mib_for(mem_mib):
    """innodb_buffer_pool_size in MiB, a whole number of chunks (MySQL rounds to them)."""
    mib = int(mem_mib) // 16 // BUFFER_POOL_CHUNK_MIB * BUFFER_POOL_CHUNK_MIB
    return max(MIN_BUFFER_POOL_MIB, min(MAX_BUFFER_POOL_MIB, mib))


def broker_memory_mib_for(mem_mib):
    """Redis's maxmemory: an eighth of the instance, at least MIN_BROKER_MIB. A queue that
    reaches it refuses new messages (noeviction) instead of dropping queued ones."""
    return max(MIN_BROKER_MIB, int(mem_mib) // 8)


def memory_limit_mib(meminfo_text, cgroup_limits):
    """The instance's memory: MemTotal, or a lower cgroup limit when the machine is a
    container (cgroup v2 memory.max or v1 memory.limit_in_bytes; "max" means none)."""
    mem = mem_mib_from_meminfo(meminfo_text)
    for text in cgroup_limits:
        value = text.strip()
        if value.isdigit():
            mem = min(mem, int(value) // (1 << 20))
    return mem


def mem_mib_from_meminfo(text):
    for line in text.splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise ValueError("no MemTotal in /proc/meminfo")
