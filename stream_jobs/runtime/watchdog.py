"""The stall watchdog: an assigned partition that the log has records for, and nothing applied.

A partition can stop being delivered without anything noticing: the jobs' fence
(`stream_jobs.delivery`) only sees a hole when a later batch arrives, and the heartbeat keeps
beating for a process whose partitions are all idle. Found so (2026-12-07): faust cleared
records it had already taken from aiokafka at the end of a rebalance (see the consumer
layer's docstring); when they were a partition's whole backlog, nothing later arrived, and
the restarted jobs left that partition's second half unapplied, logging nothing.

`StallWatch` is the pure part, fed once per tick: per assigned partition, the next offset
neither applied nor handed to the jobs (a batch waiting in the stream's buffer is the jobs
being busy, not a stall) and the high watermark. A partition whose next offset stays below
the high watermark for `stall_after_s` seconds is reported (once per `stall_after_s` while it
stays so); the caller logs the partition's consumer state and seeks it to that next offset,
which is safe because the jobs skip what they already applied.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["STALL_AFTER_S", "Stall", "StallWatch"]

STALL_AFTER_S = 10.0
"""Seconds without progress, with records to apply, before a partition counts as stalled.
Long enough for a busy worker's slowest partition (each poll delivers every partition that
has records, and the jobs take 16 polled batches at once), short next to the fault tests'
120 s progress deadline."""


@dataclass(frozen=True, slots=True)
class Stall:
    """A partition with records to apply and no progress for `stalled_s` seconds."""

    partition: int
    expected: int
    """The next offset to apply: seek there."""
    highwater: int
    stalled_s: float


@dataclass(slots=True)
class _Progress:
    expected: int
    since: float


class StallWatch:
    """Per partition, since when its next offset to apply has not moved while behind."""

    def __init__(self, stall_after_s: float = STALL_AFTER_S) -> None:
        self._stall_after_s = stall_after_s
        self._behind: dict[int, _Progress] = {}

    def check(self, now: float, partitions: Mapping[int, tuple[int, int | None]]) -> list[Stall]:
        """The stalled partitions at monotonic time `now`.

        `partitions`: every assigned partition → (next offset neither applied nor handed to
        the jobs, high watermark; None while unknown). A partition not listed is forgotten."""
        for gone in [p for p in self._behind if p not in partitions]:
            del self._behind[gone]
        stalls = []
        for partition, (expected, highwater) in partitions.items():
            if highwater is None or expected >= highwater:
                self._behind.pop(partition, None)  # caught up (or nothing known yet)
                continue
            progress = self._behind.get(partition)
            if progress is None or progress.expected != expected:
                self._behind[partition] = _Progress(expected, now)  # behind, but moving
                continue
            stalled = now - progress.since
            if stalled >= self._stall_after_s:
                stalls.append(Stall(partition, expected, highwater, stalled))
                progress.since = now  # report again only after another stall_after_s
        return stalls

    def reset(self) -> None:
        """Forget all progress (a rebalance or a deliberate hold: not a stall)."""
        self._behind.clear()
