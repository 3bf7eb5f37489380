"""Helper processes that end with the process that started them.

A worker starts helper processes (the stream jobs, sink processes); if the worker is
SIGKILLed, helpers left running keep their consumer-group memberships and stall every
restarted worker. The parent passes its pid in `AGENTAUDIT_PARENT_PID`; the child asks Linux
for a SIGTERM when that parent dies (the parent-death signal), and exits at once if the
parent is already gone (it may die between the fork and the request).
"""

from __future__ import annotations

import os
import signal
import sys

PARENT_ENV = "AGENTAUDIT_PARENT_PID"


def child_env(env: dict[str, str]) -> dict[str, str]:
    """`env` for a helper process that must end with this one."""
    return {**env, PARENT_ENV: str(os.getpid())}


def follow_parent() -> None:
    """In a helper: SIGTERM this process when the parent named in the environment dies.

    A no-op when started by hand (no `AGENTAUDIT_PARENT_PID`) or off Linux.
    """
    expected = os.environ.get(PARENT_ENV)
    if not expected or not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != int(expected):  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)
