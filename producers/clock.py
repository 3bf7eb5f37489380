"""The two kinds of injectable clock, named for what they return.

- `TimeSource` (the SDK's): wall-clock epoch nanoseconds and a monotonic reading.
- `UtcNow` (the sink's, the record sink's, the migrations' and the stream jobs'): a
  callable returning "now" as an aware UTC `datetime`; `utc_now` is the real one.

In the SDK, event timestamps (`occurred_at`) come from `time_ns()` (wall clock, UTC epoch) and every
duration (`latency_ms`, `duration_ms`) from `monotonic()`, so a wall-clock step (NTP) never
yields a negative latency. Tests pass a fake clock to get exact, sleep-free figures.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class TimeSource(Protocol):
    """What the SDK client needs from a clock: wall time for timestamps, monotonic time for
    durations."""

    def time_ns(self) -> int:
        """Wall-clock nanoseconds since the Unix epoch."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards; only differences are meaningful."""
        ...


class SystemClock:
    """The real clocks. Plain aliases of the `time` functions: they sit on the emit hot path."""

    time_ns = staticmethod(time.time_ns)
    monotonic = staticmethod(time.monotonic)


SYSTEM_CLOCK = SystemClock()

UtcNow = Callable[[], datetime]
"""A clock that returns the current time as an aware UTC datetime (tests pass a fixed one)."""


def utc_now() -> datetime:
    """The real `UtcNow`: the wall clock, in UTC."""
    return datetime.now(UTC)


def utc_from_ns(ns: int) -> datetime:
    """Epoch nanoseconds → aware UTC datetime, truncated to the microseconds the contract keeps.

    Integer arithmetic on purpose: a float of seconds since 1970 cannot hold microseconds exactly.
    """
    return _EPOCH + timedelta(microseconds=ns // 1000)
