"""Deliver what the clients hold when the process is stopped by SIGTERM.

Python's default SIGTERM disposition ends the process at once, without atexit: everything a
client had queued or was sending (up to a linger window of events, or all of them while the
broker is slow) vanished without a count. That is how containers, systemd and
`multiprocessing.Pool.terminate` stop a process. When SIGTERM still has its default
disposition as the first client is made (in the main thread), a handler is installed that
shuts the live clients down (each within its `atexit_timeout_s`: delivered, or written to its
disk spool) and then delivers SIGTERM again with the default disposition, so the process
still ends the way it would have (killed by SIGTERM). A handler of the application's own,
installed before or after, is left alone: it decides how the process exits (and a normal
exit runs the clients' atexit shutdown).
"""

from __future__ import annotations

import os
import signal
import threading
import time
import weakref
from types import FrameType
from typing import Protocol


class _Stoppable(Protocol):
    def shutdown(self, timeout: float | None = None) -> bool: ...


_clients: weakref.WeakKeyDictionary[_Stoppable, float] = weakref.WeakKeyDictionary()
_lock = threading.Lock()
_installed = False


def watch(client: _Stoppable, timeout_s: float) -> None:
    """Shut `client` down (within `timeout_s`) before the process dies of SIGTERM."""
    global _installed
    with _lock:
        _clients[client] = timeout_s
        if _installed or threading.current_thread() is not threading.main_thread():
            return
        try:
            if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
                return
            signal.signal(signal.SIGTERM, _on_sigterm)
        except (ValueError, OSError, AttributeError):  # no SIGTERM here, or not allowed
            return
        _installed = True


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    # The handler runs in the main thread between two bytecodes, maybe while it holds one of
    # a client's locks: the shutdowns run on threads of their own and are waited for with a
    # deadline, so a lock held here costs that client's delivery, never a hang.
    clients = list(_clients.items())
    threads = [
        threading.Thread(target=client.shutdown, args=(timeout,), daemon=True)
        for client, timeout in clients
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + max((t for _, t in clients), default=0.0) + 1.0
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)
