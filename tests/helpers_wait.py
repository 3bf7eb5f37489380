"""One way for tests to wait for a condition: poll it until it holds, fail at a deadline.

For progress that nothing in the test can await (another process, a store, state a
background task updates): not a timed sleep standing in for the condition, which would
hide races and depend on machine speed. The deadline is on `time.monotonic()`.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

POLL_S = 0.02


async def poll_until(
    condition: Callable[[], bool | Awaitable[bool]],
    timeout: float,
    what: str,
    *,
    interval: float = POLL_S,
    check: Callable[[], object] | None = None,
    detail: Callable[[], str] | None = None,
) -> None:
    """Poll `condition()` (plain or async) every `interval` s until it is true; raise
    `AssertionError("timed out after …s waiting for <what>: <detail()>")` after `timeout` s.
    `check()` runs each round and may raise first (e.g. a worker process that died)."""
    deadline = time.monotonic() + timeout
    while True:
        held = condition()
        if inspect.isawaitable(held):
            held = await held
        if held:
            return
        if check is not None:
            check()
        if time.monotonic() > deadline:
            more = f": {detail()}" if detail is not None else ""
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}{more}")
        await asyncio.sleep(interval)
