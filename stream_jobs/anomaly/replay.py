"""Replay safety: apply each Kafka record at most once to a piece of state.

A tenant's events arrive from one partition in offset order. The state remembers the last
offset it applied per partition; after a crash the worker restores the state from its
table and re-reads from the committed offset, so records at or below the remembered offset
are skipped instead of being counted twice. A dict keeps it correct if a tenant ever moves
to another partition (repartitioning).
"""

from __future__ import annotations


class OffsetGuard:
    """Last applied offset per partition; `accept` says whether a record is new."""

    __slots__ = ("_last",)

    def __init__(self, last: dict[int, int] | None = None) -> None:
        self._last: dict[int, int] = dict(last or {})

    def accept(self, partition: int, offset: int) -> bool:
        """True (and remember it) when `offset` is past the last applied one in `partition`."""
        last = self._last.get(partition, -1)
        if offset <= last:
            return False
        self._last[partition] = offset
        return True

    def last(self, partition: int) -> int | None:
        """The last applied offset of a partition, None before the first record."""
        return self._last.get(partition)

    def to_state(self) -> dict[str, int]:
        # JSON object keys are strings.
        return {str(p): o for p, o in self._last.items()}

    @classmethod
    def from_state(cls, state: dict[str, int]) -> OffsetGuard:
        return cls({int(p): int(o) for p, o in state.items()})
