"""How a sink's batch is stored, in order, exactly once: the flush half of `PartitionSink`.

`FlushingSink` holds what a flush does and the order it keeps; `agentaudit.sink.base` adds
the consumer group, recovery and the consume loop on top. A flush (`_store`) is, in order:

1. the dead-letter topic (at least once; a record it refuses is sent cut down,
   `deadletter.shrink`, and one refused even so is counted, never fatal);
2. the subclass's inserts (`_write`, each through `_insert` = `store_call`, retried while
   the store is unreachable until the sink stops);
3. the in-memory watermarks (`_stored`), only once the store acknowledged every insert;
4. the Kafka offset commit, which only reports progress (the store is the truth).

Before each insert the sink makes sure it is still the partitions' owner (`_ensure_member`):
a process frozen past its session (SIGSTOP, a long pause of the machine) was dropped from
the group while it held a batch, and the partitions' next owner recovered from the store
without that batch and stored it; woken, the frozen process inserted it again (measured: 100
events stored as 200 rows, chains forked). So unless a confirmation of membership was sent
within `lease_s` (half the session timeout less a heartbeat interval: any freeze long enough
to lose the session is longer), an offset commit of positions already stored confirms it
first; refused (the group rebalanced without us), the batch is dropped, `Fenced`, and the
next assignment recovers everything from the store. Not closed: a freeze between this check
and the insert reaching the store.

A flush runs either awaited (`flush`: rebalance, replaced log, stop) or behind consuming
(`_flush_behind`: the next batch is read while the store takes this one). One flush is in
flight at most, so batches are stored and committed in order; whoever flushes next waits
for it (`_settle`), and its error reaches every waiter.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from agentaudit.settings import Settings
from agentaudit.sink.deadletter import shrink
from agentaudit.sink.processor import DlqRecord
from agentaudit.store.protocol import Store
from agentaudit.store.retry import StopRequested, store_call

B = TypeVar("B")
"""The subclass's batch type."""
Fault = Callable[[str], None]
"""Called at `mid_batch`, `before_insert`, `between_inserts`, `after_insert` (fault tests)."""


def no_fault(_point: str) -> None:
    """The production `Fault`: nothing happens."""


STOP_CONFIRM_S = 5.0
"""How long a stopping sink waits for the group to confirm its membership (`_ensure_member`)."""


class Fenced(Exception):
    """The group gave this member's partitions to another while a batch waited to be stored
    (the process was frozen past its session): the batch was not stored nor committed, and
    nothing is until the next assignment recovers from the store."""


class FlushingSink(ABC, Generic[B]):
    """Stores a subclass's batches in order; `consumer` and `producer` are set while running."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        log: logging.Logger,
        fault: Fault,
        on_flush: Callable[[B], None] | None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.log = log
        self.fault = fault
        self.on_flush = on_flush
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self._flush_lock = asyncio.Lock()
        self._in_flight: asyncio.Task[None] | None = None
        """The batch being stored while the next one is read (`_flush_behind`)."""
        self._stopping = asyncio.Event()
        """Set by `stop()`: ends consuming, and an insert retried meanwhile gives up."""
        self.flushes = 0
        self.fenced = 0
        """Batches dropped unstored because the group had given their partitions away."""
        self._processing_s = 0.0
        """Time in `_process` since the last flush (the pending batch's `process` stage)."""
        self.lease_s = 0.0
        """How long a confirmation of group membership is trusted (`_ensure_member`)."""
        self._confirmed_at = float("-inf")
        """Monotonic time the last confirmation of membership was sent: an assignment, or an
        offset commit the group coordinator accepted."""
        self._stored_offsets: dict[TopicPartition, int] = {}
        """Per assigned partition, a position whose every message is stored (recovery's
        resume offsets, then each commit): what `_ensure_member` commits again."""
        self.last_stages: dict[str, float] = {}
        """Seconds per stage of the last flush (`process`, `dead_letter_topic`, `insert`,
        `commit`), set before `on_flush` is called; timed per batch, never per event."""

    # -- what a subclass provides -------------------------------------------------------------

    @abstractmethod
    def _take(self) -> B | None:
        """Hand over the pending batch (None when it covers no message)."""

    @abstractmethod
    def _dead_letters_out(self, batch: B) -> list[DlqRecord]:
        """The batch's records for the dead-letter topic."""

    @abstractmethod
    async def _write(self, batch: B) -> None:
        """Every insert of the batch, in order, through `_insert`."""

    @abstractmethod
    def _stored(self, batch: B) -> None:
        """The batch's inserts were acknowledged: advance the watermarks."""

    @abstractmethod
    def _offsets(self, batch: B) -> dict[TopicPartition, int]:
        """The Kafka offsets to commit once the batch is stored (last offset + 1)."""

    @abstractmethod
    def _dlq_unsent(self) -> None:
        """Count a dead letter the DLQ topic refused even cut down."""

    # -- flushing -----------------------------------------------------------------------------

    async def flush(self) -> None:
        """Insert the pending batch, then commit its offsets, after the flush in flight (if
        any). Serialised with rebalances."""
        await self._settle()
        async with self._flush_lock:
            batch = self._take()
            if batch is None:
                return
            await self._store(batch, self._taken_processing())

    async def _flush_behind(self) -> None:
        """Start storing the pending batch and return: consuming goes on meanwhile.

        Waits for the previous flush first (batches are stored and committed in order; one
        in flight). Nothing is awaited between taking the batch and starting its task, so
        whoever flushes next (a rebalance, stopping) waits for this one through `_settle`.
        """
        await self._settle()
        batch = self._take()
        if batch is None:
            return
        self._in_flight = asyncio.create_task(self._store_locked(batch, self._taken_processing()))

    def _storing(self) -> bool:
        return self._in_flight is not None and not self._in_flight.done()

    async def _settle(self) -> None:
        """Wait until no flush is in flight; its error is raised (to every caller that waits).

        A loop: while this waited, the consume loop may have started the next flush (it
        waited for the same one), and a caller that goes on to give partitions up must not
        leave it running.
        """
        while self._in_flight is not None:
            task = self._in_flight
            await task
            if self._in_flight is task:
                self._in_flight = None

    def _taken_processing(self) -> float:
        processing, self._processing_s = self._processing_s, 0.0
        return processing

    async def _store_locked(self, batch: B, processing_s: float) -> None:
        async with self._flush_lock:
            await self._store(batch, processing_s)

    async def _store(self, batch: B, processing_s: float) -> None:
        """Dead letters out, the inserts, the watermarks, then the offset commit."""
        self.fault("before_insert")
        t0 = time.perf_counter()
        dlq = self._dead_letters_out(batch)
        if dlq:
            await self._send_dead_letters(dlq)
        t1 = time.perf_counter()
        await self._write(batch)
        self._stored(batch)
        t2 = time.perf_counter()
        self.fault("after_insert")
        await self._commit(self._offsets(batch))
        self.last_stages = {
            "process": processing_s,
            "dead_letter_topic": t1 - t0,
            "insert": t2 - t1,
            "commit": time.perf_counter() - t2,
        }
        self.flushes += 1
        if self.on_flush:
            self.on_flush(batch)

    async def _send_dead_letters(self, records: list[DlqRecord]) -> None:
        """At least once to the DLQ topic; the `dead_letters` table is the exact record.

        A record the producer or broker refuses (too large, or any Kafka error) is sent again
        cut to a stub (`deadletter.shrink`); one refused even so is logged and counted
        (`_dlq_unsent`), never fatal: the batch's table rows are inserted either way.
        """
        assert self.producer is not None
        producer, topic = self.producer, self.settings.dlq_topic

        async def deliver(record: DlqRecord) -> None:
            key, value, headers = record.key, record.value, record.headers
            for last in (False, True):
                try:
                    await (await producer.send(topic, value, key=key, headers=headers))
                    return
                except KafkaError as exc:
                    if last:
                        self._dlq_unsent()
                        self.log.error(
                            "dead letter %s not sent to %s even cut down (%r); its dead_letters "
                            "row is stored",
                            dict(headers).get("source"),
                            topic,
                            exc,
                        )
                        return
                    self.log.warning(
                        "dead letter refused by %s (%r); sending it cut down", topic, exc
                    )
                    key, value, headers = shrink(key, value, headers)

        await asyncio.gather(*(deliver(r) for r in records))

    async def _insert(
        self, table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]], token: str
    ) -> None:
        """One insert of row tuples, by a member that still owns its partitions; retried
        while the store is unreachable, until `stop()`."""
        await self._ensure_member()
        data = [list(col) for col in zip(*rows, strict=True)]
        insert, stop = self.store.insert, self._stopping
        await store_call(self.log, insert, table, data, columns, dedup_token=token, stop=stop)

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        assert self.consumer is not None
        sent = time.monotonic()
        try:
            await self.consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # Harmless: positions are recovered from the store, the commit only reports progress.
            self.log.info("offset commit skipped (%s); the store holds the truth", exc)
            return
        self._confirmed_at = sent
        self._stored_offsets.update(offsets)

    def _assigned(self, offsets: dict[TopicPartition, int]) -> None:
        """Partitions were just assigned (membership confirmed), resuming at `offsets`."""
        self._confirmed_at = time.monotonic()
        self._stored_offsets = dict(offsets)

    async def _ensure_member(self) -> None:
        """Raise `Fenced` unless this member still owns its partitions (see the module)."""
        assert self.consumer is not None
        if time.monotonic() - self._confirmed_at <= self.lease_s:
            return
        assigned = self.consumer.assignment()
        offsets = {tp: at for tp, at in self._stored_offsets.items() if tp in assigned}
        if not offsets:
            raise Fenced("no partition is assigned")
        sent = time.monotonic()
        # aiokafka retries a commit while the coordinator is unreachable: until stop(), and
        # then for a while (a stopping sink confirms itself to store its last batch).
        commit = asyncio.ensure_future(self.consumer.commit(offsets))
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({commit, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not commit.done():
                await asyncio.wait({commit}, timeout=STOP_CONFIRM_S)
        finally:
            stopping.cancel()
        if not commit.done():
            commit.cancel()
            raise StopRequested("stopped before the group confirmed this member")
        try:
            commit.result()
        except (CommitFailedError, IllegalStateError) as exc:
            self._confirmed_at = float("-inf")
            raise Fenced(f"its offset commit was refused: {type(exc).__name__}") from None
        self._confirmed_at = sent

    def _lost(self, exc: Fenced) -> None:
        """After `Fenced`: drop the pending batch (and the failed flush), store nothing until
        the next assignment recovers from the store."""
        self.log.error(
            "this sink lost its partitions to another group member while a batch waited to be "
            "stored (%s; frozen past the session timeout?): the batch is dropped unstored, the "
            "partitions' owner stores it",
            exc,
        )
        self.fenced += 1
        self._take()
        if self._in_flight is not None and self._in_flight.done():
            self._in_flight = None
