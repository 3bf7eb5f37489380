"""CPU time of this process and of child processes, without a dependency (Linux `/proc`)."""

from __future__ import annotations

import os
import time

_TICKS = os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    """User + system CPU seconds of this process so far, every thread (chDB's included);
    nanosecond resolution, where `os.times` counts 10 ms ticks."""
    return time.process_time()


def pid_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far, from `/proc/<pid>/stat`.

    Fields 14 and 15 (utime, stime) in clock ticks; the command name (field 2) may hold
    spaces, so fields are counted after its closing parenthesis.
    """
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS
