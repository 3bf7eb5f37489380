"""One consumer-group sink into the store: what the event sink and the record sink share.

`PartitionSink` is a plain aiokafka consumer group member that lands its topics in the store
exactly once. Subclasses say which topics, how to recover from the store, what a message
becomes and what a flush inserts (`agentaudit.sink.worker.SinkWorker` for events,
`agentaudit.sink.pipeline_records.sink.RecordSink` for alerts and control records). The steps:

1. Assignment (`recover`): where each partition stands is read from the store, never from
   Kafka's committed offsets (its log epoch, per-table watermarks, the anchor), and every
   partition is sought there, synchronously (why: `recover`). A crash at any point replays
   into skips.
2. Consume (`_consume`): `getmany` until the batch is full or the flush interval is over;
   every chunk passes the partition's log guard first (`agentaudit.sink.logguard`): a
   replaced log (topic recreated, a broker that kept nothing) found on assignment, when
   offsets go backwards, or when the position is beyond the log's end, becomes a new log
   epoch instead of silent skips.
3. Flush (`flush`), in this order: the dead-letter topic (a record it refuses is sent cut
   down, `deadletter.shrink`, never fatal), the subclass's inserts (each through
   `store_call`, which stops retrying when the sink stops), the in-memory watermarks, and
   only then the Kafka offset commit (which only reports progress). A full or due batch is
   flushed behind consuming (`_flush_behind`): the next batch is read while the store
   takes this one (the insert is most of a batch's wall time), and keeps growing past the
   flush interval until that insert ends (up to the batch size); one flush in flight at
   most, so batches are stored and committed in order; its error stops the sink at the
   next poll. A rebalance, a replaced log and stopping wait for the flush in flight first.
Why not a faust agent: see README "Why the sink is not a faust agent".
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError, OffsetOutOfRangeError
from clickhouse_connect.driver.exceptions import DatabaseError

from agentaudit.errors import StoreRefused, UserError
from agentaudit.settings import Settings
from agentaudit.sink.deadletter import shrink
from agentaudit.sink.logguard import Anchor, Decision, LogGuard
from agentaudit.sink.processor import DlqRecord
from agentaudit.store.protocol import Store
from agentaudit.store.retry import StopRequested, blocking_store_call, store_call
from agentaudit_sdk import kafka_config

B = TypeVar("B")
"""The subclass's batch type."""
Start = tuple[int, Anchor | None]
"""Where a partition resumes after recovery, and the stored message proving its log (if any)."""
START_TIMEOUT_S = 60.0
"""Longest a Kafka client of the sink may take to connect (bootstrap, TLS, SASL)."""
STORE_BUSY_POLL_MS = 10
"""While a due batch waits for the insert in flight, how often the loop looks for its end."""
Fault = Callable[[str], None]
"""Called at `mid_batch`, `before_insert`, `between_inserts`, `after_insert` (fault tests)."""


def no_fault(_point: str) -> None:
    """The production `Fault`: nothing happens."""


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, sink: PartitionSink[Any]) -> None:
        self.sink = sink

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.sink.hand_over()

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.sink.recover(list(assigned))


class PartitionSink(ABC, Generic[B]):
    """Consumes `topics` into the store until `stop()`.

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
        group_id: str,
        log: logging.Logger,
        fault: Fault = no_fault,
        on_flush: Callable[[B], None] | None = None,
        abandoned: Callable[[], bool] | None = None,
        consumer_options: dict[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.topics = topics
        self.group_id = group_id
        self.log = log
        self.fault = fault
        self.on_flush = on_flush
        self.abandoned = abandoned
        self.consumer_options = consumer_options or {}
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self._flush_lock = asyncio.Lock()
        self._in_flight: asyncio.Task[None] | None = None
        """The batch being stored while the next one is read (`_flush_behind`)."""
        self._stopping = asyncio.Event()
        self.ready = asyncio.Event()
        self.flushes = 0
        self.guards = {topic: LogGuard() for topic in topics}
        """Per topic: where each assigned partition is read, and whether its log is the same."""
        self._assignments = 0
        """+1 on every recovery: what was fetched before an await may be stale after it."""
        self._processing_s = 0.0
        """Time in `_process` since the last flush (the pending batch's `process` stage)."""
        self.last_stages: dict[str, float] = {}
        """Seconds per stage of the last flush (`process`, `dead_letter_topic`, `insert`,
        `commit`), set before `on_flush` is called; timed per batch, never per event."""

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

    @abstractmethod
    def _pending(self) -> tuple[int, float] | None:
        """(rows, monotonic start) of the pending batch; None when it covers no message."""

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

    async def _periodic(self, *, final: bool) -> None:
        """Called after every poll, and with `final` once all is stored before partitions are
        given up (revoke, stop). The event sink signs its chains' checkpoints here."""

    # -- lifecycle ----------------------------------------------------------------------------

    def stop(self) -> None:
        self._stopping.set()

    async def hand_over(self) -> None:
        """Partitions are revoked: store and commit everything, sign, forget the logs."""
        await self.flush()
        await self._periodic(final=True)
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

    async def run(self) -> None:
        """Consume until `stop()`; flushes and commits what it holds before returning."""
        s = self.settings
        connection = s.kafka_connection()
        self.producer = kafka_config.producer(
            connection, acks="all", compression_type="lz4", linger_ms=5
        )
        options: dict[str, Any] = {
            "group_id": self.group_id,
            # "none": an offset out of range is raised to `_consume`, never reset silently
            # (that is how a replaced, shorter log shows; `agentaudit.sink.logguard`).
            "enable_auto_commit": False,
            "auto_offset_reset": "none",
            "max_poll_records": s.sink_batch_size,
            "fetch_max_bytes": 64 << 20,
            "max_partition_fetch_bytes": 16 << 20,
            **self.consumer_options,
        }
        self.consumer = kafka_config.consumer(connection, **options)
        # bounded, and a refused TLS handshake or login is named (aiokafka only logs it)
        await kafka_config.start(self.producer, connection, START_TIMEOUT_S)
        try:
            await kafka_config.start(self.consumer, connection, START_TIMEOUT_S)
            self.consumer.subscribe(self.topics, listener=_Rebalance(self))
            await self._consume()
            await self.flush()
            await self._periodic(final=True)
        except StopRequested as exc:
            # Stopping with the store unreachable: what was not stored was not committed
            # either; whoever owns these partitions next reads it again.
            self.log.warning("sink stopped before the store took its last batch: %s", exc)
        finally:
            if self._in_flight is not None:  # stopped by an error: let its insert end first
                await asyncio.wait([self._in_flight])
            await self.consumer.stop()
            await self.producer.stop()

    # -- consuming ----------------------------------------------------------------------------

    async def _consume(self) -> None:
        assert self.consumer is not None
        interval = self.settings.sink_flush_interval_ms / 1000
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            pending = self._pending()
            if pending is None:
                wait_ms, room = int(interval * 1000), self.settings.sink_batch_size
            else:
                # A due batch waiting for the insert in flight looks every few ms for its end.
                least = STORE_BUSY_POLL_MS if self._storing() else 1
                wait_ms = max(least, int((interval - (loop.time() - pending[1])) * 1000))
                room = max(1, self.settings.sink_batch_size - pending[0])
            try:
                records = await self.consumer.getmany(timeout_ms=wait_ms, max_records=room)
            except OffsetOutOfRangeError as exc:
                await self._out_of_range(exc.args[0])
                continue
            assignments = self._assignments
            for tp, messages in records.items():
                if self._assignments != assignments:
                    break  # a rebalance during a reset's flush: the rest was fetched before it
                await self._apply(tp, self.guards[tp.topic].check(tp.partition, messages))
            if self._in_flight is not None and self._in_flight.done():
                await self._in_flight  # its error, if any, stops the sink here
            await self._check_high_watermarks()
            await self._periodic(final=False)
            now = self._pending()
            if now is None:
                continue
            if pending is None:
                self.fault("mid_batch")  # once per batch: "mid_batch:3" dies inside the 3rd batch
            full = now[0] >= self.settings.sink_batch_size
            # Due while the store still takes the previous batch: keep reading into this one
            # (the batch grows with the insert's time, not with a fixed interval) until that
            # insert ends; a full batch waits for it (memory stays bounded).
            if full or (loop.time() - now[1] >= interval and not self._storing()):
                await self._flush_behind()

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
        """One insert of row tuples; retried while the store is unreachable, until `stop()`."""
        data = [list(col) for col in zip(*rows, strict=True)]
        insert, stop = self.store.insert, self._stopping
        await store_call(self.log, insert, table, data, columns, dedup_token=token, stop=stop)

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        assert self.consumer is not None
        try:
            await self.consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # Harmless: positions are recovered from the store, the commit only reports progress.
            self.log.info("offset commit skipped (%s); the store holds the truth", exc)


async def run_sink(sink: PartitionSink[Any], stop: asyncio.Event | None, what: str) -> None:
    """Run `sink` until `stop` is set (or forever); its errors as one line a user can act on.

    `what` names what the sink stores, for the messages ("events", "pipeline records").
    """
    task = asyncio.create_task(sink.run())
    if stop is not None:
        waiter = asyncio.create_task(stop.wait())
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        sink.stop()
        waiter.cancel()
    try:
        await task
    except KafkaError as exc:
        raise UserError(
            f"Kafka error in the sink of {what}: {exc}; check AGENTAUDIT_KAFKA_BOOTSTRAP"
        ) from None
    except DatabaseError as exc:
        raise StoreRefused(
            f"the store refused a batch of {what} ({' '.join(str(exc).split())[:500]}); nothing "
            "of it was committed: fix the cause (README, Reliability) and restart the worker"
        ) from None
