"""Injectable time sources for the SDK.

Event timestamps (`occurred_at`) come from `time_ns()` (wall clock, UTC epoch) and every
duration (`latency_ms`, `duration_ms`) from `monotonic()`, so a wall-clock step (NTP) never
yields a negative latency. Tests pass a fake clock to get exact, sleep-free figures.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Clock(Protocol):
    """What the client needs from a clock."""

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


def utc_from_ns(ns: int) -> datetime:
    """Epoch nanoseconds → aware UTC datetime, truncated to the microseconds the contract keeps.

    Integer arithmetic on purpose: a float of seconds since 1970 cannot hold microseconds exactly.
    """
    return _EPOCH + timedelta(microseconds=ns // 1000)
