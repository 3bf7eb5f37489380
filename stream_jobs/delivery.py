"""The replay guard's precondition: a partition's events reach the jobs without a hole.

The ledger skips an event at or below its tenant's last applied offset: that is how a batch
replayed after a crash or a rebalance is applied once. It is only right if the events before
an applied one were applied too. After a rebalance the faust consumer broke that: it took a
partition's records from aiokafka (which moves the fetch position past them) while its flow
was stopped and dropped them; its seek back to the committed offset failed mid-rebalance
(`IllegalStateError: No current assignment`), so it next delivered the records *after* the
dropped ones, and only then, after recovery's own seek, the whole range again. Traced in the
two-workers fault test: offsets 481–499 applied, then 250–499 delivered and skipped as
replays; 231 events of each kept partition lost, their budget thresholds never crossed.

`DeliveryFence` keeps, per partition, the last offset the jobs applied. A batch starting past
it + 1 is a hole: the caller seeks the partition back to the expected offset and skips the
batch; later batches that still start past that offset (fetched from the old position before
the seek) are skipped too, until the rewound delivery arrives. A skipped batch is not
acknowledged (`BatchingStream.skip`): it is delivered again after the seek and acked once
applied. Acked when skipped, the next commit could pass over it before it came back (faust
counts the offsets a delivery jumped over as acked), and a crash in between lost its events.

Which offsets count: after a rebalance, the restored states seed the fence (`seed`: the
highest offset any tenant of the partition applied); a partition this worker kept through the
rebalance also keeps what it applied itself. A partition not assigned any more is forgotten
(`retain`).

Offsets that hold no record (transaction markers, aborted transactions, retention) are never
delivered: before seeking back, the jobs ask the log (`stream_jobs.runtime.log_probe`) and,
when nothing readable lies in the hole, take the batch (`no_records`). Without an answer, a
real gap is never delivered, however often the partition seeks back: after `GIVE_UP_AFTER` skipped
batches in one hole the fence takes it for such a gap, declares the missing offsets lost,
and the partition continues from the lowest offset delivered since (`Hole.gap`; the agent
logs it as an error). Stale batches fetched before a seek number at most the stream buffer
(64) plus a fetch, so a race is always repaired before that bound. A seek that was lost
anyway is asked for again: every `RESEEK_EVERY` skipped batches of one hole, on the next
batch after a seek that failed (`seek_failed`), and when `OVERDUE_TICKS` of the jobs' ticks
pass without the rewound delivery (`overdue`: a seek overridden by faust's own seek to the
committed offsets leaves nothing to deliver once the partition's newest batches were
skipped; that stalled the two-workers fault test about 1 run in 4). A skipped batch is
never applied, so seeking again is always safe.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["GIVE_UP_AFTER", "OVERDUE_TICKS", "RESEEK_EVERY", "DeliveryFence", "Hole"]

GIVE_UP_AFTER = 200
"""Batches skipped in one hole before it is taken for a real gap in the log."""

OVERDUE_TICKS = 5
"""Ticks (1 s each in the jobs) without the rewound delivery before the seek is asked again."""

RESEEK_EVERY = 70
"""Skipped batches in one hole after which its seek is taken for lost and asked for again:
more than the stream buffer (64) plus a fetch can hold from before a seek."""


@dataclass(frozen=True, slots=True)
class Hole:
    """A batch that starts past the expected offset: skip it (do not apply it)."""

    partition: int
    expected: int
    """The offset the partition's delivery must continue from: seek there."""
    first: int
    """The offset the skipped batch starts at."""
    seek: bool
    """True for the first batch of this hole: seek back now. False: a seek to `expected` is
    already under way and this batch was fetched before it."""
    gap: bool = False
    """The hole is a real gap in the log: offsets before `expected` are lost; seek there."""


@dataclass(slots=True)
class _Rewind:
    expected: int
    lowest_first: int
    """The lowest first offset of the batches skipped since the seek back."""
    skipped: int = 1
    ticks: int = 0
    """Ticks since the seek was last asked for."""


class DeliveryFence:
    """Per partition, the last applied offset, and the rewind point of a hole being repaired."""

    def __init__(
        self,
        give_up_after: int = GIVE_UP_AFTER,
        reseek_every: int = RESEEK_EVERY,
        overdue_ticks: int = OVERDUE_TICKS,
    ) -> None:
        self._last: dict[int, int] = {}
        self._rewinding: dict[int, _Rewind] = {}
        self._give_up_after = give_up_after
        self._reseek_every = reseek_every
        self._overdue_ticks = overdue_ticks

    def admit(self, partition: int, first_offset: int) -> Hole | None:
        """None: apply the batch that starts at `first_offset`. A `Hole`: skip it."""
        last = self._last.get(partition)
        if last is None or first_offset <= last + 1:
            rewind = self._rewinding.get(partition)
            if rewind is not None and first_offset <= rewind.expected:
                del self._rewinding[partition]  # the rewound delivery has arrived
            return None
        expected = last + 1
        rewind = self._rewinding.get(partition)
        if rewind is None or rewind.expected != expected:
            self._rewinding[partition] = _Rewind(expected, first_offset)
            return Hole(partition, expected, first_offset, seek=True)
        rewind.skipped += 1
        rewind.lowest_first = min(rewind.lowest_first, first_offset)
        if rewind.skipped <= self._give_up_after:
            lost = rewind.skipped % self._reseek_every == 0  # the seek did not take: again
            if lost:
                rewind.ticks = 0
            return Hole(partition, expected, first_offset, seek=lost)
        # A real gap: continue from the lowest offset the log delivered since the seek.
        resume = rewind.lowest_first
        del self._rewinding[partition]
        self._last[partition] = resume - 1
        return Hole(partition, resume, first_offset, seek=True, gap=True)

    def overdue(self) -> list[Hole]:
        """Called once per tick: the holes whose rewound delivery has not come for
        `overdue_ticks` ticks since their seek was asked for. Seek each back again."""
        due = []
        for partition, rewind in self._rewinding.items():
            rewind.ticks += 1
            if rewind.ticks >= self._overdue_ticks:
                rewind.ticks = 0
                due.append(Hole(partition, rewind.expected, rewind.lowest_first, seek=True))
        return due

    def no_records(self, partition: int, first_offset: int) -> None:
        """The offsets from the expected one up to `first_offset` − 1 hold no record the jobs
        can read (transaction markers, aborted transactions, retention: the log says so, see
        `stream_jobs.runtime.log_probe`): the batch starting at `first_offset` is next."""
        self.applied(partition, first_offset - 1)
        self._rewinding.pop(partition, None)

    def seek_failed(self, partition: int) -> None:
        """The seek a `Hole` asked for failed: the next batch past the hole asks again."""
        self._rewinding.pop(partition, None)

    def applied(self, partition: int, last_offset: int) -> None:
        """A batch of `partition` up to `last_offset` was applied (replayed ones included)."""
        if last_offset > self._last.get(partition, -1):
            self._last[partition] = last_offset

    def seed(self, partition: int, offset: int) -> None:
        """A restored state has applied `partition` up to `offset`."""
        self.applied(partition, offset)

    def retain(self, assigned: Iterable[int]) -> None:
        """After a rebalance: forget the partitions not assigned any more (another worker
        may apply them meanwhile, so what this one applied says nothing when they return)."""
        keep = set(assigned)
        for table in (self._last, self._rewinding):
            for partition in [p for p in table if p not in keep]:
                del table[partition]

    def last_applied(self, partition: int) -> int | None:
        return self._last.get(partition)
