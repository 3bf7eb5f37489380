"""The jobs' recent event ids, kept across restarts and rebalances (table `recent`).

A re-sent event (an SDK retry, a spool replay) is a new message carrying a known
`event_id`. The sink stores it once: its window of recent ids is recovered from the store
on start and on every rebalance. The jobs held theirs in memory only, so a copy arriving
after a restart (the original applied and committed before it) was counted again: spend,
calls, breaker and anomaly inputs twice, while the trail holds the event once.

So each partition's ids are also logged, in the order they were first seen, in chunks of
`CHUNK` ids under the keys `<partition>:<slot>` of the table `recent` (its changelog
partition is the source partition, so the ids move with it on a rebalance). Slots are a
ring: chunk number `seq` goes to slot `seq % slots`, and `slots * CHUNK` covers the dedup
window plus the chunk being filled, so compaction keeps the table bounded while every id
the window can hold stays stored. Only the chunks changed since the last write are written
(at commit time, with the other states), which costs about one id's bytes per event.

Restore takes, per partition, the chunks of the highest numbers (a slot never written
since an older epoch holds a lower `seq`) and adds them to the worker's window oldest
first across partitions, by the time each chunk was last written (`at`): with more ids
stored than the window holds, it keeps the most recent ones of all partitions, as the
sink's recovery does (newest `ingested_at` first), not the partitions loaded last.
It then continues each partition's newest chunk.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agentaudit.sink.dedup import RecentIds

__all__ = ["CHUNK", "RecentLog"]

CHUNK = 1000
"""Ids per table value: ~38 kB of JSON, far below a broker's message limit."""


@dataclass
class _Partition:
    seq: int = 0
    """Number of the chunk being filled."""
    ids: list[str] = field(default_factory=list)
    """The ids of chunk `seq` so far."""
    full: list[tuple[int, list[str]]] = field(default_factory=list)
    """Chunks filled since the last write: written once more, whole."""
    dirty: bool = False


class RecentLog:
    """A worker's window of recent event ids plus, per owned partition, its persisted log."""

    def __init__(
        self, window: int, chunk: int = CHUNK, clock: Callable[[], float] = time.time
    ) -> None:
        self.ids = RecentIds(window)
        self._clock = clock
        """When a chunk is written (unix seconds): orders chunks across partitions."""
        self._chunk = chunk
        self._slots = -(-window // chunk) + 1 if window > 0 else 0
        self._parts: dict[int, _Partition] = {}
        self._revoked: dict[int, _Partition] = {}
        """Logs of partitions revoked by a rebalance whose recovery has not ended (`forget`)."""
        self._restored: dict[int, dict[int, tuple[float, list[str]]]] = {}

    def add(self, partition: int, event_id: str) -> bool:
        """Remember an id seen in `partition`; False if the window already holds it."""
        if not self.ids.add(event_id):
            return False
        if self._slots:
            part = self._parts.get(partition)
            if part is None:
                part = self._parts[partition] = _Partition()
            part.ids.append(event_id)
            part.dirty = True
            if len(part.ids) >= self._chunk:
                part.full.append((part.seq, part.ids))
                part.seq, part.ids = part.seq + 1, []
        return True

    def writes(self) -> list[tuple[str, int, dict[str, Any]]]:
        """(key, partition, value) of every chunk changed since the last call, oldest first."""
        out: list[tuple[str, int, dict[str, Any]]] = []
        at = self._clock()
        for partition, part in self._parts.items():
            if not part.dirty:
                continue
            chunks = [*part.full, (part.seq, list(part.ids))] if part.ids else part.full
            for seq, ids in chunks:
                value = {"seq": seq, "at": at, "ids": ids}
                out.append((f"{partition}:{seq % self._slots}", partition, value))
            part.full, part.dirty = [], False
        return out

    def restore(self, key: str, value: dict[str, Any]) -> None:
        """Take one recovered chunk; applied by `retain` (after the table's recovery)."""
        partition = int(key.split(":", 1)[0])
        chunk = (float(value.get("at", 0.0)), list(value["ids"]))
        self._restored.setdefault(partition, {})[int(value["seq"])] = chunk

    def retain(self, assigned: set[int]) -> None:
        """After a recovery: keep the logs of `assigned` partitions only, and load the
        recovered ids of the partitions this worker did not hold already."""
        for partition in [p for p in self._parts if p not in assigned]:
            del self._parts[partition]
        # A rebalance revokes every partition (aiokafka's eager protocol) and faust does not
        # read the changelog of a partition it keeps again: only what was written since its
        # last read comes back, often nothing. Such a log continues where it was; started
        # again from chunk 0, it overwrote the stored chunks, and their ids were gone after
        # the next restart (a re-sent event then counted twice).
        revoked, self._revoked = self._revoked, {}
        for partition, part in revoked.items():
            if partition in assigned and partition not in self._parts:
                self._parts[partition] = part
        restored, self._restored = self._restored, {}
        loaded: list[tuple[float, int, int, list[str]]] = []
        for partition, chunks in sorted(restored.items()):
            if partition not in assigned:
                continue
            newest = max(chunks)
            held = self._parts.get(partition)
            if held is not None and (held.seq, len(held.ids)) >= self._position(chunks, newest):
                continue  # held all along: memory is at least as new as what it wrote
            loaded += [
                (chunks[s][0], partition, s, chunks[s][1])
                for s in chunks
                if s > newest - self._slots
            ]
            ids = chunks[newest][1]
            part = self._parts[partition] = _Partition(newest, ids)
            if len(ids) >= self._chunk:
                part.seq, part.ids = newest + 1, []
        loaded.sort(key=lambda c: c[:3])  # oldest first: the window keeps the newest
        for *_, ids in loaded:
            for event_id in ids:
                self.ids.add(event_id)

    def _position(self, chunks: dict[int, tuple[float, list[str]]], newest: int) -> tuple[int, int]:
        """(chunk number, ids in it) where a log restored from `chunks` continues."""
        ids = len(chunks[newest][1])
        return (newest + 1, 0) if ids >= self._chunk else (newest, ids)

    def forget(self, revoked: set[int]) -> None:
        """Partitions were revoked: their logs are not written (if another worker gets them,
        they are its to write; the ids stay in the window: they are events of the log, so a
        later copy is a duplicate anyway). Kept aside until the recovery ends: `retain`
        continues the log of a partition the rebalance gave back to this worker, unless the
        recovered chunks are newer (another worker wrote them meanwhile)."""
        for partition in revoked:
            part = self._parts.pop(partition, None)
            if part is not None:
                self._revoked[partition] = part
