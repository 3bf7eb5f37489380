"""Processes seen through /proc: children of a pid, alive or gone (Linux)."""

from __future__ import annotations

import os
from pathlib import Path


def stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state, ppid, …); None when gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def children_of(pid: int) -> set[int]:
    return {
        int(e)
        for e in os.listdir("/proc")
        if e.isdigit() and (f := stat(int(e))) and int(f[1]) == pid
    }


def alive(pid: int) -> bool:
    fields = stat(pid)
    return fields is not None and fields[0] != "Z"


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
