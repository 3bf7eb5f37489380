"""The spool contract the client relies on, and the in-memory spool used when no disk spool
is configured (it keeps order and bounds memory, but does not survive a restart)."""

from __future__ import annotations

from collections import deque
from typing import Protocol

WireRecord = tuple[bytes, bytes]
RECORD_OVERHEAD = 64
"""Approximate per-record bookkeeping bytes charged against `max_bytes` (tuple + bytes objects)."""


class SpoolBackend(Protocol):
    """A bounded FIFO of wire records. Used from the client's background thread only."""

    durable: bool
    """True if the records survive a process restart."""
    torn: int
    """Torn or corrupt tails found and skipped."""

    def __len__(self) -> int:
        """Records appended and not yet acknowledged."""
        ...

    def append(self, records: list[WireRecord]) -> int:
        """Append in order; returns how many were kept — always a prefix: once one record does
        not fit, the rest of the batch is refused too, so the spool never has holes."""
        ...

    def read(self, max_records: int) -> list[WireRecord]:
        """The oldest records, up to `max_records`, left in place until `ack`."""
        ...

    def ack(self, count: int) -> None:
        """Remove the first `count` records returned by the last `read`."""
        ...

    def close(self) -> None:
        """Make everything durable (where that applies) and release resources; idempotent."""
        ...

    def for_child(self) -> SpoolBackend:
        """In a forked child: the spool the child uses instead (what this one holds is the
        parent's to deliver; the child must not touch it)."""
        ...


class MemorySpool:
    """`SpoolBackend` in process memory, bounded by `max_bytes` (0 disables spooling)."""

    durable = False
    torn = 0

    def __init__(self, max_bytes: int = 32 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self.bytes_used = 0
        self._records: deque[WireRecord] = deque()

    def __len__(self) -> int:
        return len(self._records)

    def append(self, records: list[WireRecord]) -> int:
        kept = 0
        for record in records:
            size = len(record[0]) + len(record[1]) + RECORD_OVERHEAD
            if self.bytes_used + size > self.max_bytes:
                break
            self._records.append(record)
            self.bytes_used += size
            kept += 1
        return kept

    def read(self, max_records: int) -> list[WireRecord]:
        return [self._records[i] for i in range(min(max_records, len(self._records)))]

    def ack(self, count: int) -> None:
        for _ in range(min(count, len(self._records))):
            key, value = self._records.popleft()
            self.bytes_used -= len(key) + len(value) + RECORD_OVERHEAD

    def close(self) -> None:
        return None

    def for_child(self) -> MemorySpool:
        return MemorySpool(self.max_bytes)
