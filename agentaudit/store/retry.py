"""Store calls that wait out an unreachable store instead of losing a batch.

One policy for both sinks (events and records): `producers.backoff.Backoff`, 0.1 s doubling to
5 s, never giving up: a stalled sink shows as consumer lag, a dropped batch shows nowhere.
Errors retrying cannot fix (bad SQL, a schema mismatch) propagate and stop the worker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from agentaudit.errors import StoreUnavailable
from producers.backoff import Backoff

MAX_BACKOFF_S = 5.0


async def store_call(log: logging.Logger, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a blocking store call off the event loop; retry while the store is unreachable."""
    backoff = Backoff(0.1, MAX_BACKOFF_S)
    while True:
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except StoreUnavailable as exc:
            delay = backoff.next_delay()
            log.warning("store unavailable (%s); retrying in %.1fs", exc, delay)
            await asyncio.sleep(delay)


def blocking_store_call(log: logging.Logger, fn: Callable[..., Any], *args: Any) -> Any:
    """`store_call` for a rebalance callback, which must not yield to the event loop."""
    backoff = Backoff(0.1, MAX_BACKOFF_S)
    while True:
        try:
            return fn(*args)
        except StoreUnavailable as exc:
            delay = backoff.next_delay()
            log.warning("store unavailable during recovery (%s); retrying in %.1fs", exc, delay)
            time.sleep(delay)
