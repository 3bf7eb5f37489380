"""One way for tests to wait for a condition: poll it until it holds, fail at a deadline.

For progress that nothing in the test can await (another process, a store, state a
background task updates): not a timed sleep standing in for the condition, which would
hide races and depend on machine speed. The deadline is on `time.monotonic()`.
`poll_until` is for async tests, `poll_value` for plain ones (it returns what it waited for).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

POLL_S = 0.02
T = TypeVar("T")


class _Deadline:
    """The part both waits share: after each failed round, `check()` then the deadline."""

    def __init__(
        self,
        timeout: float,
        what: str,
        check: Callable[[], object] | None,
        detail: Callable[[], str] | None,
    ) -> None:
        self.at = time.monotonic() + timeout
        self.timeout, self.what, self.check, self.detail = timeout, what, check, detail

    def missed(self) -> None:
        """Raise what `check()` raises, or `AssertionError` once the deadline has passed."""
        if self.check is not None:
            self.check()
        if time.monotonic() > self.at:
            more = f": {self.detail()}" if self.detail is not None else ""
            raise AssertionError(f"timed out after {self.timeout:g}s waiting for {self.what}{more}")


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
    deadline = _Deadline(timeout, what, check, detail)
    while True:
        held = condition()
        if inspect.isawaitable(held):
            held = await held
        if held:
            return
        deadline.missed()
        await asyncio.sleep(interval)


def poll_value(
    condition: Callable[[], T | None],
    timeout: float,
    what: str,
    *,
    interval: float = POLL_S,
    check: Callable[[], object] | None = None,
    detail: Callable[[], str] | None = None,
) -> T:
    """`poll_until` for plain (not async) tests: the first truthy value of `condition()`."""
    deadline = _Deadline(timeout, what, check, detail)
    while not (value := condition()):
        deadline.missed()
        time.sleep(interval)  # another process's progress: nothing to await
    return value
