"""Remember recent event ids so an event the SDK re-sent (retry after a timeout) is stored once.

Kafka offsets make redelivery of the *same message* harmless; a re-*sent* event is a new
message with the same `event_id`. Those arrive close together (a retry, a spool replay), so a
bounded window of recent ids per worker catches them without a store round trip per batch.
The window is recovered from the store on start and rebalance.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable


def event_key(tenant_id: str, event_id: str) -> str:
    """What the sink's window remembers of an event: its id *within its tenant*. A re-send
    comes from the same tenant; with the id alone, any producer could make another tenant's
    event a "duplicate" by sending its id first (OTLP ids are a function of tenant, trace id,
    span id, type and time, and trace context travels to other services), and that event was
    dropped: in neither `events` nor `dead_letters`, counted only as a duplicate. Tenants are
    slugs (no '/'), so the key names one (tenant, id) pair."""
    return f"{tenant_id}/{event_id}"


class RecentIds:
    """A FIFO-bounded set of event ids."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._order: deque[str] = deque()
        self._ids: set[str] = set()

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, event_id: str) -> bool:
        return event_id in self._ids

    def add(self, event_id: str) -> bool:
        """Record an id; False if it was already there (a duplicate)."""
        if self.capacity <= 0:
            return True
        if event_id in self._ids:
            return False
        self._ids.add(event_id)
        self._order.append(event_id)
        if len(self._order) > self.capacity:
            self._ids.discard(self._order.popleft())
        return True

    def reset(self, ids: Iterable[str]) -> None:
        """Replace the window with ids recovered from the store, oldest first."""
        self._order.clear()
        self._ids.clear()
        for event_id in ids:
            self.add(event_id)
