"""The one protocol of the jobs' keyed state: what a changelog-backed table needs of a job.

A job keeps its state per key in memory and says which keys changed (`pop_dirty`); the
topology writes `to_state(key)` to the key's table after publishing the batch's records,
loads recovered values with `from_state` and drops the keys of revoked partitions with
`forget` (the table keeps them for the next owner). `SpendTracker`, `BudgetEvaluator` and
`SpendJob` are keyed by tenant (`*` for global), `PartitionSpend` by source partition and
`BreakerBoard` by tenant; each declares the protocol, so mypy checks every signature.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

K = TypeVar("K")


class KeyedState(Protocol[K]):
    """State per key that a table persists: dirty keys out, JSON-safe values in and out."""

    def pop_dirty(self) -> set[K]:
        """Keys whose state changed since the last call: the table values to write."""
        ...

    def forget(self, key: K) -> None:
        """Drop one key from memory (its partition was revoked; the table keeps its value)."""
        ...

    def to_state(self, key: K) -> dict[str, Any] | None:
        """One key's state as JSON-safe primitives (None if the key is unknown)."""
        ...

    def from_state(self, key: K, doc: dict[str, Any]) -> None:
        """Restore one key from `to_state` output (after a restart or a rebalance)."""
        ...


class PartitionedState(KeyedState[str], Protocol):
    """Keyed state whose keys belong to source partitions (the spend and breakers tables):
    a value is written to its key's partition, and a rebalance forgets the tenants of the
    partitions this worker no longer owns."""

    def partition_of(self, key: str) -> int | None:
        """The source partition `key` belongs to (None while unknown)."""
        ...

    def tenants(self) -> list[str]:
        """The tenants held in memory."""
        ...
