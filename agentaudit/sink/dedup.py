"""Remember recent event ids so an event the SDK re-sent (retry after a timeout) is stored once.

Kafka offsets make redelivery of the *same message* harmless; a re-*sent* event is a new
message with the same `event_id`. Those arrive close together (a retry, a spool replay), so a
bounded window of recent ids per worker catches them without a store round trip per batch.
The window is recovered from the store on start and rebalance.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from enum import Enum


class Seen(Enum):
    """What `RecentIds.seen` found."""

    NEW = "new"
    REPEAT = "repeat"
    CONFLICT = "conflict"


def event_key(tenant_id: str, event_id: str) -> str:
    """What the sink's window remembers of an event: its id *within its tenant*. A re-send
    comes from the same tenant; with the id alone, any producer could make another tenant's
    event a "duplicate" by sending its id first (OTLP ids are a function of tenant, trace id,
    span id, type and time, and trace context travels to other services), and that event was
    dropped: in neither `events` nor `dead_letters`, counted only as a duplicate. Tenants are
    slugs (no '/'), so the key names one (tenant, id) pair."""
    return f"{tenant_id}/{event_id}"


class RecentIds:
    """A FIFO-bounded set of event ids; with `seen`, each id's content digest too."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._order: deque[str] = deque()
        self._ids: dict[str, int | None] = {}

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, event_id: str) -> bool:
        return event_id in self._ids

    def add(self, event_id: str) -> bool:
        """Record an id; False if it was already there (a duplicate)."""
        return self.seen(event_id, None) is Seen.NEW

    def seen(self, event_id: str, digest: int | None) -> Seen:
        """Record an id with its content's digest: NEW, REPEAT (the same content, or an id
        whose digest is unknown: recovered from the store) or CONFLICT (other content: the id
        was reused, not re-sent, and the message must not vanish as a duplicate)."""
        if self.capacity <= 0:
            return Seen.NEW
        if event_id in self._ids:
            known = self._ids[event_id]
            if known is None or digest is None or known == digest:
                return Seen.REPEAT
            return Seen.CONFLICT
        self._ids[event_id] = digest
        self._order.append(event_id)
        if len(self._order) > self.capacity:
            del self._ids[self._order.popleft()]
        return Seen.NEW

    def reset(self, ids: Iterable[str]) -> None:
        """Replace the window with ids recovered from the store, oldest first (their
        digests unknown)."""
        self._order.clear()
        self._ids.clear()
        for event_id in ids:
            self.add(event_id)
