"""Fair delivery across partitions: one partition's backlog must not hold back another's.

faust's stream buffer is one queue per topic, delivered in arrival order, and it pauses a
partition only when the whole queue is under pressure. With a backlog on one partition the
queue filled with that partition's polled batches (64 of up to 5,000 records) and a record
of any other partition waited behind all of them: measured (60k events of tenant A queued on
its partition), tenant B's event on another partition was applied after all 60k, 3.6 s
after it was produced, so B's breaker could not trip meanwhile. Kafka Streams and faust's
own per-record path pick the next record across partitions; here:

- `PartitionHolds` (the consumer): a partition with `limit` polled batches handed to the
  streams and not yet acked or released is not fetched until half of them are done, so the
  buffer holds at most `limit` batches of any one partition and a quiet partition's records
  are fetched and queued at the next poll;
- the stream gives the event loop a few turns between runs (nothing else in the agent's
  body need suspend, and the fetch loop advances only then);
- `RoundRobin` (the stream): the stream drains the queue into one FIFO per partition and
  hands the agent one partition's run at a time (at most `max_` batches and `max_records`
  records), partitions taking turns. Per-partition order is kept; acks are unchanged (a
  run is acked when the agent asks for the next one), so no offset is committed for data
  not applied.

Measured (integration test, 60k events of A, then B's event; A's records applied between
B's event reaching the log and B's being applied): before, 27,373 to 55,000 (B after all of
A's buffered backlog); with eight batches per partition, 15,791 to 26,582 (aiokafka fills a
poll's 5,000-record budget from its buffered partitions in order, so B's fetched record
waited until A's held batches were applied); with two (the jobs' `PARTITION_BUFFER`), 791 to
11,582.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from faust.types import TP

__all__ = ["PARTITION_BUFFER_MAX", "PartitionHolds", "RoundRobin"]

PARTITION_BUFFER_MAX = 8
"""Polled batches of one partition that may wait for the streams before it is not fetched
(`AuditApp.partition_buffer`): enough for an agent with little work per record to find the
next batches at hand (the bench's batched stages: two halved the read rate). An app whose
runs are long sets fewer: see `stream_jobs.app.PARTITION_BUFFER`."""


class PartitionHolds:
    """Per partition, the polled batches handed to the streams and not yet done with.

    `handed` before a batch is delivered, `done` when it is acked or released; a partition
    reaching `limit` is held (left out of fetches: `active`) until it is back to half.
    `reset` (a rebalance: the streams' queues are cleared) starts a new epoch: a batch of an
    earlier epoch changes no count when it is done."""

    def __init__(self, limit: int = PARTITION_BUFFER_MAX) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.resume_at = limit // 2
        self.held: set[TP] = set()
        self.epoch = 0
        self._waiting: dict[TP, int] = {}

    def waiting(self, tp: TP) -> int:
        """Batches of `tp` handed and not yet done."""
        return self._waiting.get(tp, 0)

    def handed(self, message: Any) -> None:
        """`message` (a batch with a `holds_epoch` slot) is about to go to the streams."""
        message.holds_epoch = self.epoch
        tp = message.tp
        n = self._waiting[tp] = self._waiting.get(tp, 0) + 1
        if n >= self.limit:
            self.held.add(tp)

    def done(self, message: Any) -> bool:
        """`message` was acked or released; True when that ends its partition's hold (the
        fetcher should look again). Idempotent per message."""
        if getattr(message, "holds_epoch", -1) != self.epoch:
            return False  # not counted, already done, or from before the last reset
        message.holds_epoch = -1
        tp = message.tp
        n = self._waiting[tp] = max(0, self._waiting.get(tp, 0) - 1)
        if tp in self.held and n <= self.resume_at:
            self.held.discard(tp)
            return True
        return False

    def release(self, tp: TP) -> None:
        """Fetch `tp` again whatever its count (the stall watchdog's remedy)."""
        self.held.discard(tp)
        self._waiting.pop(tp, None)

    def reset(self) -> None:
        """Forget every count and hold (a rebalance)."""
        self.epoch += 1
        self._waiting.clear()
        self.held.clear()

    def active(self, tps: set[TP]) -> set[TP]:
        """`tps` without the held partitions."""
        return tps - self.held if self.held else tps


class RoundRobin:
    """One FIFO of events per partition; `next_run` takes turns across partitions."""

    def __init__(self) -> None:
        self._queues: dict[TP, deque[Any]] = {}  # insertion order is the turn order

    def __bool__(self) -> bool:
        return bool(self._queues)

    def add(self, tp: TP, event: Any) -> None:
        queue = self._queues.get(tp)
        if queue is None:
            queue = self._queues[tp] = deque()
        queue.append(event)

    def next_run(
        self, max_: int, max_records: int | None = None, size: Callable[[Any], int] = len
    ) -> list[Any]:
        """The next partition's oldest events: at most `max_`, and (when `max_records` is
        given) at most `max_records` by `size` (at least one event). That partition then
        goes to the back of the turn order. Empty when nothing is buffered."""
        if not self._queues:
            return []
        tp = next(iter(self._queues))
        queue = self._queues.pop(tp)
        run = [queue.popleft()]
        records = size(run[0]) if max_records is not None else 0
        while queue and len(run) < max_:
            if max_records is not None:
                n = size(queue[0])
                if records + n > max_records:
                    break
                records += n
            run.append(queue.popleft())
        if queue:
            self._queues[tp] = queue  # to the back: the other partitions go first
        return run

    def drain(self) -> Iterable[Any]:
        """Every buffered event (the stream stops or was interrupted); empties the buffer."""
        queues, self._queues = self._queues, {}
        for queue in queues.values():
            yield from queue
