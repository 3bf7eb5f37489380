"""The transport contract between the client and a broker, and the in-memory transport for tests.

A transport is driven only from the client's background event loop, one call at a time.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol, runtime_checkable

import orjson


class TransportUnavailable(Exception):
    """The broker cannot take records right now; the client spools them and reconnects later."""


class RecordsRefused(Exception):
    """`send_batch` delivered every record but `refused` (index in the batch → reason), which
    the broker will never take (larger than the topic or producer allows): sending them again
    cannot succeed, and would hold up every later record behind them in the spool. The
    client drops them, counts them in `stats.dropped_refused` and keeps the reasons in
    `client.recent_errors`."""

    def __init__(self, refused: dict[int, BaseException]) -> None:
        first = next(iter(refused.values()), None)
        super().__init__(f"{len(refused)} record(s) refused by the broker, dropped: {first!r}")
        self.refused = refused


@runtime_checkable
class Transport(Protocol):
    """Where batches go. Implementations must bound the time of every call.

    Optional: `after_fork_in_child()`, called in a forked child before its first `start()`,
    to drop connections inherited from the parent without closing them."""

    async def start(self) -> None:
        """Connect (or reconnect after a failure). Raise `TransportUnavailable` if the broker
        cannot be reached; the client retries with capped exponential backoff."""
        ...

    async def send_batch(self, records: list[tuple[bytes, bytes]]) -> None:
        """Deliver (key, value) records in order and return once all are acknowledged; raise
        `TransportUnavailable` if any was not (the client spools the whole batch: duplicates
        are possible and dropped downstream by event_id, losses are not), or
        `RecordsRefused` if all were acknowledged except records refused for good."""
        ...

    async def close(self) -> None:
        """Release connections; called once at shutdown."""
        ...


class InMemoryTransport:
    """Keeps every acknowledged record in memory; for agent developers' tests.

    Set `available = False` to make `start`/`send_batch` raise `TransportUnavailable` and
    exercise the spool; `wait_for(n, timeout)` waits (without polling) until n records arrived.
    """

    def __init__(self, *, available: bool = True) -> None:
        self.available = available
        self.records: list[tuple[bytes, bytes]] = []
        self.batches = 0
        self.start_calls = 0
        self.closed = False
        self._cond = threading.Condition()

    async def start(self) -> None:
        self.start_calls += 1
        if not self.available:
            raise TransportUnavailable("in-memory transport is marked unavailable")

    async def send_batch(self, records: list[tuple[bytes, bytes]]) -> None:
        if not self.available:
            raise TransportUnavailable("in-memory transport is marked unavailable")
        with self._cond:
            self.records.extend(records)
            self.batches += 1
            self._cond.notify_all()

    async def close(self) -> None:
        self.closed = True

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every record's value decoded from JSON, in arrival order."""
        with self._cond:
            return [orjson.loads(value) for _, value in self.records]

    def wait_for(self, count: int, timeout: float | None = None) -> bool:
        """Block until at least `count` records have arrived; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self.records) >= count, timeout)

    def clear(self) -> None:
        with self._cond:
            self.records.clear()
