"""The partitions a sink is assigned: recovered from the store, guarded while read, handed over.

`AssignedSink` is the middle layer of `agentaudit.sink.base.PartitionSink`, on top of the
flush (`agentaudit.sink.flushing`). It keeps, per assigned partition, where it is read and
whether its log is still the one the store's offsets came from:

- on assignment (`recover`), where each partition stands is read from the store, never from
  Kafka's committed offsets (its log epoch, per-table watermarks, the anchor), and every
  partition is sought there, synchronously (why: `recover`); a crash at any point replays
  into skips;
- while reading, every chunk passes the partition's log guard (`agentaudit.sink.logguard`,
  `_apply`): a replaced log (topic recreated, a broker that kept nothing) found on
  assignment, when offsets go backwards, or when the position is beyond the log's end
  (`_out_of_range`, `_check_high_watermarks`) becomes a new log epoch (`_new_epoch`)
  instead of silent skips;
- on revoke (`hand_over`), everything is stored and committed before the partitions go.

aiokafka only logs an error raised in a rebalance listener, and goes on fetching (after a
failed recovery: from Kafka's committed offsets). `_Rebalance` keeps it instead
(`agentaudit.rebalance`); the consume loop raises it (`raise_failure`) before it uses
anything fetched.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import TopicPartition

from agentaudit.rebalance import RebalanceListener
from agentaudit.settings import Settings
from agentaudit.sink.flushing import B, Fault, Fenced, FlushingSink
from agentaudit.sink.logguard import Anchor, Decision, LogGuard
from agentaudit.store.protocol import Store
from agentaudit.store.retry import blocking_store_call

Start = tuple[int, Anchor | None]
"""Where a partition resumes after recovery, and the stored message proving its log (if any)."""


class _Rebalance(RebalanceListener):
    """Hands partitions over on revoke, recovers them on assignment; the first error is kept
    for the consume loop to raise (`agentaudit.rebalance`)."""

    def __init__(self, sink: AssignedSink[Any]) -> None:
        super().__init__()
        self.sink = sink

    async def revoked(self, revoked: list[TopicPartition]) -> None:
        await self.sink.hand_over()

    async def assigned(self, assigned: list[TopicPartition]) -> None:
        self.sink.recover(assigned)  # no await before it: see `AssignedSink.recover`


class AssignedSink(FlushingSink[B]):
    """A consumer group member's partitions of `topics` (see the module docstring).

    `abandoned` says the store is gone for good (a sink process whose store owner died): it
    is asked while a store call is retried where the loop is blocked (recovery), and stops
    the sink instead of retrying forever.
    """

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        topics: list[str],
        log: logging.Logger,
        fault: Fault,
        on_flush: Callable[[B], None] | None,
        abandoned: Callable[[], bool] | None,
    ) -> None:
        super().__init__(settings, store, log=log, fault=fault, on_flush=on_flush)
        self.topics = topics
        self.abandoned = abandoned
        self.ready = asyncio.Event()
        """Set once partitions were first assigned and sought."""
        self.guards = {topic: LogGuard() for topic in topics}
        """Per topic: where each assigned partition is read, and whether its log is the same."""
        self._assignments = 0
        """+1 on every recovery: what was fetched before an await may be stale after it."""
        self._rebalance = _Rebalance(self)

    # -- what a subclass provides -------------------------------------------------------------

    @abstractmethod
    def _read_store(self, assigned: list[TopicPartition]) -> Any:
        """Blocking store queries for `recover` (retried while the store is unreachable)."""

    @abstractmethod
    def _restore(self, state: Any, assigned: list[TopicPartition]) -> dict[TopicPartition, Start]:
        """Load what `_read_store` returned into the processor; where each partition starts."""

    @abstractmethod
    def _epoch(self, tp: TopicPartition) -> int:
        """The partition's current log epoch."""

    @abstractmethod
    def _begin_epoch(self, tp: TopicPartition) -> int:
        """The partition's log was replaced (nothing of it is pending): start epoch +1."""

    @abstractmethod
    def _process(self, tp: TopicPartition, messages: Sequence[Any]) -> None:
        """Add consumed messages of one partition, in offset order, to the pending batch."""

    async def _periodic(self, *, final: bool) -> None:
        """Called after every poll, and with `final` once all is stored before partitions are
        given up (revoke, stop). The event sink signs its chains' checkpoints here."""

    # -- assignment and revocation ------------------------------------------------------------

    async def hand_over(self) -> None:
        """Partitions are revoked: store and commit everything, sign, forget the logs. A member
        the group already dropped (`Fenced`) stores and signs nothing."""
        try:
            await self.flush()
            await self._periodic(final=True)
        except Fenced as exc:
            self._lost(exc)
        for guard in self.guards.values():
            guard.clear()

    def _give_up(self) -> bool:
        if self.abandoned is not None and self.abandoned():
            self._stopping.set()
        return self._stopping.is_set()

    def recover(self, assigned: list[TopicPartition]) -> None:
        """Read where each partition stands from the store; seek every partition.

        Deliberately synchronous: aiokafka starts fetching from the committed offsets as soon
        as partitions are assigned, and a seek issued after records were delivered stalls the
        group consumer (seen with aiokafka 0.14). With no await between the assignment and
        the seek, nothing is fetched from the wrong position. It blocks the loop only during a
        rebalance, for a few store queries.
        """
        assert self.consumer is not None
        ours = [tp for tp in assigned if tp.topic in self.guards]
        ours.sort(key=lambda tp: (tp.topic, tp.partition))
        state = blocking_store_call(self.log, self._read_store, ours, give_up=self._give_up)
        starts = self._restore(state, ours)
        for guard in self.guards.values():
            guard.clear()
        self._assignments += 1
        self._assigned({tp: starts.get(tp, (0, None))[0] for tp in ours})
        for tp in ours:
            resume, anchor = starts.get(tp, (0, None))
            # One message early when the store holds some of this epoch: the anchor must be
            # the first message fetched, or the log is not the one these offsets came from.
            self.consumer.seek(tp, self.guards[tp.topic].assign(tp.partition, resume, anchor))
        self.log.info(
            "assigned %s; resuming at %s (log epochs %s)",
            [f"{tp.topic}[{tp.partition}]" for tp in ours],
            {f"{tp.topic}[{tp.partition}]": starts.get(tp, (0, None))[0] for tp in ours},
            {f"{tp.topic}[{tp.partition}]": self._epoch(tp) for tp in ours},
        )
        self.ready.set()

    # -- the log guard ------------------------------------------------------------------------

    async def _apply(self, tp: TopicPartition, decision: Decision) -> None:
        """Process a chunk the log guard passed, or act on what it found."""
        assert self.consumer is not None
        if decision.note is not None:
            self.log.error("%s[%d]: %s", tp.topic, tp.partition, decision.note)
        if decision.reset is not None:
            await self._new_epoch(tp, decision.reset)
            return
        if decision.records:
            started = time.perf_counter()  # per chunk of a poll, not per message
            self._process(tp, decision.records)
            self._processing_s += time.perf_counter() - started
        if decision.seek is not None:
            self.consumer.seek(tp, decision.seek)

    async def _check_high_watermarks(self) -> None:
        """A position above the partition's high watermark is out of range, also when the
        broker does not say so (the local broker answers such fetches with nothing)."""
        assert self.consumer is not None
        beyond = {}
        for tp in self.consumer.assignment():
            guard = self.guards.get(tp.topic)
            high = self.consumer.highwater(tp)
            at = guard.waiting_at(tp.partition) if guard is not None else None
            if high is not None and at is not None and high < at:
                beyond[tp] = at
        if beyond:
            await self._out_of_range(beyond)

    async def _out_of_range(self, positions: dict[TopicPartition, int]) -> None:
        assert self.consumer is not None
        assignments = self._assignments
        starts = await self.consumer.beginning_offsets(list(positions))
        for tp, offset in positions.items():
            if self._assignments != assignments:
                return  # reassigned meanwhile: recovery sought every partition again
            guard = self.guards[tp.topic]
            await self._apply(tp, guard.out_of_range(tp.partition, offset, starts[tp]))

    async def _new_epoch(self, tp: TopicPartition, reason: str) -> None:
        """The partition's log was replaced: store what was read of the old one, then read
        the new one from its start as a new log epoch."""
        assert self.consumer is not None
        assignments = self._assignments
        await self.flush()
        if self._assignments != assignments:
            return  # reassigned during the flush: recovery checks the log again
        epoch = self._begin_epoch(tp)
        self.log.error(
            "log of %s[%d] was replaced (%s; topic recreated, or a broker that kept nothing): "
            "reading it again from its start as log epoch %d; what the store holds is dropped "
            "by id",
            tp.topic,
            tp.partition,
            reason,
            epoch,
        )
        self.guards[tp.topic].restarted(tp.partition)
        await self.consumer.seek_to_beginning(tp)
