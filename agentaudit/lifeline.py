"""Helper processes that end with the process that started them.

A worker starts helper processes (the stream jobs, sink processes); if the worker is
SIGKILLed, helpers left running keep their consumer-group memberships and stall every
restarted worker. The parent passes its pid (in `AGENTAUDIT_PARENT_PID`, or on the command
line); the child asks Linux for a signal when that parent dies (the parent-death signal), and
takes it at once if the parent is already gone (it may die between the fork and the request).
"""

from __future__ import annotations

import os
import signal
import sys

PARENT_ENV = "AGENTAUDIT_PARENT_PID"


def child_env(env: dict[str, str]) -> dict[str, str]:
    """`env` for a helper process that must end with this one."""
    return {**env, PARENT_ENV: str(os.getpid())}


def follow_parent(parent_pid: int | None = None, sig: int = signal.SIGTERM) -> None:
    """In a helper: get `sig` when the parent dies (`parent_pid`, else the one named in the
    environment); `sig` at once if it is already gone.

    A no-op when started by hand (no parent named) or off Linux.
    """
    expected = parent_pid or int(os.environ.get(PARENT_ENV) or 0)
    if not expected or not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, sig)
    if os.getppid() != expected:  # the parent died before the request took effect
        os.kill(os.getpid(), sig)
