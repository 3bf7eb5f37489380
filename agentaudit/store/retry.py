"""Store calls that wait out an unreachable store instead of losing a batch.

One policy for both sinks (events and records): `agentaudit_sdk.backoff.Backoff`, 0.1 s doubling to
5 s, never giving up on its own: a stalled sink shows as consumer lag, a dropped batch shows
nowhere. But the caller can give up: a stopping worker, or a sink process whose store owner
died (its endpoint is gone for good), must not retry forever as an orphan member of the
consumer group holding partitions (issue 9 F). Giving up raises `StopRequested`: nothing
was stored by that call, and the caller must not commit past it.
Errors retrying cannot fix (bad SQL, a schema mismatch) propagate and stop the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from agentaudit.errors import StoreUnavailable
from agentaudit_sdk.backoff import Backoff

MAX_BACKOFF_S = 5.0
GIVE_UP_POLL_S = 0.2
"""How often the blocking variant asks `give_up` while it waits (it cannot await an event)."""


class StopRequested(Exception):
    """The caller stopped retrying an unreachable store; the call stored nothing."""


async def store_call(
    log: logging.Logger,
    fn: Callable[..., Any],
    *args: Any,
    stop: asyncio.Event | None = None,
    **kwargs: Any,
) -> Any:
    """Run a blocking store call off the event loop; retry while the store is unreachable.

    With `stop`: raise `StopRequested` instead of retrying once it is set (also mid-backoff).
    """
    backoff = Backoff(0.1, MAX_BACKOFF_S)
    while True:
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except StoreUnavailable as exc:
            if stop is not None and stop.is_set():
                raise StopRequested(f"stopped while the store was unavailable ({exc})") from None
            delay = backoff.next_delay()
            log.warning("store unavailable (%s); retrying in %.1fs", exc, delay)
            if stop is None:
                await asyncio.sleep(delay)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)


def blocking_store_call(
    log: logging.Logger,
    fn: Callable[..., Any],
    *args: Any,
    give_up: Callable[[], bool] | None = None,
) -> Any:
    """`store_call` for a rebalance callback, which must not yield to the event loop.

    The loop is blocked, so a stop event cannot be set meanwhile: `give_up` is asked
    between attempts and every `GIVE_UP_POLL_S` while waiting; True raises `StopRequested`.
    """
    backoff = Backoff(0.1, MAX_BACKOFF_S)
    while True:
        try:
            return fn(*args)
        except StoreUnavailable as exc:
            delay = backoff.next_delay()
            log.warning("store unavailable during recovery (%s); retrying in %.1fs", exc, delay)
            deadline = time.monotonic() + delay
            while True:
                if give_up is not None and give_up():
                    raise StopRequested(
                        f"stopped while the store was unavailable ({exc})"
                    ) from None
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                time.sleep(min(left, GIVE_UP_POLL_S))
