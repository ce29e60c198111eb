"""What Linux says about a process: resident memory and CPU time, from /proc.

`resource.getrusage` only covers this process and its waited-for children; the client process
is neither waited for nor finished while it is measured, so its CPU time is read here instead.
"""

from __future__ import annotations

import os
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def memory_kib(pid: int | str = "self") -> dict[str, int]:
    """VmRSS (resident now) and VmHWM (the peak resident) in KiB."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0])
    return found


def rss_mib(pid: int | str = "self") -> float:
    return memory_kib(pid)["VmRSS"] / 1024


def cpu_seconds(pid: int | str) -> float:
    """User + system CPU time of every thread of `pid` so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name may hold spaces and parentheses: fields count from the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def machine_busy_seconds() -> float:
    """CPU time every core of the machine has spent busy so far (not idle, not waiting for
    I/O), summed: over a window, the machine's load in cores, whoever made it."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle, iowait = fields[3], fields[4]
    # user nice system idle iowait irq softirq steal (guest and guest_nice are in user, nice)
    return (sum(fields[:8]) - idle - iowait) / _TICKS
