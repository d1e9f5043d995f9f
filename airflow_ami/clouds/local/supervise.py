"""Keep a systemd-nspawn instance alive across reboots, as EC2 keeps an instance.

nspawn exits with status 133 when the container asks to reboot; on EC2 the
instance comes back, so we start it again. Signals reach nspawn (SIGTERM: a
clean poweroff) and end the loop. Run as:
supervise.py [--cgroup DIR]... systemd-nspawn ...   (DIR: a cgroup directory to run in)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from types import FrameType

REBOOT_STATUS = 133


def main(command: list[str]) -> int:
    child: subprocess.Popen[bytes] | None = None
    stopping = False

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    while True:
        child = subprocess.Popen(command)
        status = child.wait()
        if status != REBOOT_STATUS or stopping:
            return status
        print("supervise: instance rebooted; starting it again", flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    while args[:1] == ["--cgroup"]:
        with open(os.path.join(args[1], "cgroup.procs"), "w") as procs:
            procs.write(str(os.getpid()))
        args = args[2:]
    sys.exit(main(args))
