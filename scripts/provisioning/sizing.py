"""Size Airflow's parallelism to the instance (pure)."""

# A LocalExecutor task is a forked Python process with Airflow imported: budget for it.
MIB_PER_TASK = 256
# MySQL, the api-server, scheduler, dag-processor, triggerer and the OS.
RESERVED_MIB = 1536
TASKS_PER_CPU = 8
MIN_PARALLELISM = 4
MAX_PARALLELISM = 128


def parallelism_for(cpus, mem_mib):
    """Task slots for ``cpus`` CPUs and ``mem_mib`` MiB of RAM.

    Airflow tasks mostly wait (on I/O, on remote systems), so CPU allows several per
    core; memory is the hard limit.  Never below MIN_PARALLELISM so a small instance
    still runs tasks in parallel, never above MAX_PARALLELISM.
    """
    cpus = max(1, int(cpus))
    by_cpu = cpus * TASKS_PER_CPU
    by_mem = (int(mem_mib) - RESERVED_MIB) // MIB_PER_TASK
    return max(MIN_PARALLELISM, min(by_cpu, by_mem, MAX_PARALLELISM))


def resolve_parallelism(setting, cpus, mem_mib):
    """The ``parallelism`` setting: "auto" sizes to the instance, an integer pins it."""
    if str(setting).strip().lower() == "auto":
        return parallelism_for(cpus, mem_mib)
    value = int(setting)
    if value < 1:
        raise ValueError("parallelism must be >= 1 or 'auto', got %r" % setting)
    return value


def mem_mib_from_meminfo(text):
    for line in text.splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise ValueError("no MemTotal in /proc/meminfo")
