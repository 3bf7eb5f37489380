"""The sink worker: a plain aiokafka consumer group member that lands events in ClickHouse.

Loop: consume → `SinkProcessor.add` → flush on size or interval. Flush order is what makes
it exactly once: dead-letter topic, `dead_letters` insert, `events` insert, watermarks,
and only then the Kafka offset commit. On every assignment the positions come from the
store, not from Kafka's committed offsets, so a crash at any point replays into skips; and on
every assignment, and whenever offsets go backwards or out of range, the log is checked to
be the one the store's offsets came from (`agentaudit.sink.logguard`), so a replaced log
(topic recreated, broker that kept nothing) becomes a new log epoch instead of silent skips.
Why not a faust agent: see README "Why the sink is not a faust agent".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError, OffsetOutOfRangeError
from clickhouse_connect.driver.exceptions import DatabaseError

from agentaudit.errors import StoreRefused, UserError
from agentaudit.settings import Settings
from agentaudit.sink.deadletter import shrink
from agentaudit.sink.faults import CrashPlan
from agentaudit.sink.logguard import Decision, LogGuard
from agentaudit.sink.processor import Batch, DlqRecord, SinkProcessor
from agentaudit.sink.recovery import recover
from agentaudit.sink.rows import DEAD_LETTER_COLUMNS, INGEST_COLUMNS, INGEST_TABLE, Source
from agentaudit.store.protocol import Store
from agentaudit.store.retry import StopRequested, blocking_store_call, store_call
from schemas.pricing import load_pricing

log = logging.getLogger("agentaudit.sink")


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: SinkWorker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.worker.flush()
        self.worker.guard.clear()

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.worker.recover(list(assigned))


class SinkWorker:
    """Consumes the events topic into the store until `stop()`.

    `abandoned` says the store is gone for good (a sink process whose store owner died): it
    is asked while a store call is retried where the loop is blocked (recovery), and stops
    the worker instead of retrying forever.
    """

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        crash_plan: CrashPlan | None = None,
        on_flush: Callable[[Batch], None] | None = None,
        abandoned: Callable[[], bool] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.abandoned = abandoned
        self.crash = crash_plan or CrashPlan.from_env()
        self.on_flush = on_flush
        self.processor = SinkProcessor(
            load_pricing(), settings.dedup_window, max_clock_skew_s=settings.max_clock_skew_s
        )
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self._flush_lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self.ready = asyncio.Event()
        self.flushes = 0
        self.guard = LogGuard()
        """Where each assigned partition is read, and whether its log is still the same one."""
        self._assignments = 0
        """+1 on every recovery: what was fetched before an await may be stale after it."""

    def stop(self) -> None:
        self._stopping.set()

    def _give_up(self) -> bool:
        if self.abandoned is not None and self.abandoned():
            self._stopping.set()
        return self._stopping.is_set()

    def recover(self, assigned: list[TopicPartition]) -> None:
        """Read watermarks, chain heads and recent ids from the store; seek every partition.

        Deliberately synchronous: aiokafka starts fetching from the committed offsets as soon
        as partitions are assigned, and a seek issued after records were delivered stalls the
        group consumer (seen with aiokafka 0.14). With no await between the assignment and
        the seek, nothing is fetched from the wrong position. It blocks the loop only during a
        rebalance, for a few store queries.
        """
        assert self.consumer is not None
        topic = self.settings.events_topic
        parts = sorted(tp.partition for tp in assigned if tp.topic == topic)
        state = blocking_store_call(
            log, recover, self.store, topic, parts, self.settings.dedup_window, give_up=self._give_up
        )
        logs = state.logs
        self.processor.recover(
            {p: lg.event_watermark for p, lg in logs.items() if lg.event_watermark >= 0},
            {p: lg.dead_letter_watermark for p, lg in logs.items() if lg.dead_letter_watermark >= 0},
            state.heads, state.recent_ids, {p: lg.epoch for p, lg in logs.items()},
        )  # fmt: skip
        self.guard.clear()
        self._assignments += 1
        for p in parts:
            anchor = logs[p].anchor if p in logs else None
            # One message early when the store holds some of this epoch: the anchor must be
            # the first message fetched, or the log is not the one these offsets came from.
            self.consumer.seek(TopicPartition(topic, p), self.guard.assign(p, self.processor.resume_offset(p), anchor))
        log.info("assigned partitions %s; resuming at %s (log epochs %s)", parts,
                 {p: self.processor.resume_offset(p) for p in parts}, self.processor.epochs)  # fmt: skip
        self.ready.set()

    async def run(self) -> None:
        """Consume until `stop()`; flushes and commits what it holds before returning."""
        s = self.settings
        self.producer = AIOKafkaProducer(
            bootstrap_servers=s.kafka_bootstrap, acks="all", compression_type="lz4", linger_ms=5
        )
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=s.kafka_bootstrap, group_id=s.consumer_group,
            # "none": an offset out of range is raised to `_consume`, never reset silently
            # (that is how a replaced, shorter log shows; `agentaudit.sink.logguard`).
            enable_auto_commit=False, auto_offset_reset="none",
            max_poll_records=s.sink_batch_size, fetch_max_bytes=64 << 20,
            max_partition_fetch_bytes=16 << 20,
        )  # fmt: skip
        await self.producer.start()
        try:
            await self.consumer.start()
            self.consumer.subscribe([s.events_topic], listener=_Rebalance(self))
            await self._consume()
            await self.flush()
        except StopRequested as exc:
            # Stopping with the store unreachable: what was not stored was not committed
            # either; whoever owns these partitions next reads it again.
            log.warning("sink stopped before the store took its last batch: %s", exc)
        finally:
            await self.consumer.stop()
            await self.producer.stop()

    async def _consume(self) -> None:
        assert self.consumer is not None
        interval = self.settings.sink_flush_interval_ms / 1000
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            batch = self.processor.batch
            age = loop.time() - batch.started if batch.ranges else 0.0
            wait_ms = max(1, int((interval - age) * 1000)) if batch.ranges else int(interval * 1000)
            room = max(1, self.settings.sink_batch_size - batch.rows)
            was_empty = not batch.ranges
            try:
                records = await self.consumer.getmany(timeout_ms=wait_ms, max_records=room)
            except OffsetOutOfRangeError as exc:
                await self._out_of_range(exc.args[0])
                continue
            assignments = self._assignments
            for tp, messages in records.items():
                if self._assignments != assignments:
                    break  # a rebalance during a reset's flush: the rest was fetched before it
                await self._apply(tp, self.guard.check(tp.partition, messages))
            await self._check_high_watermarks()
            if not self.processor.batch.ranges:
                continue
            if was_empty:
                self.crash.hit("mid_batch")  # once per batch: "mid_batch:3" dies inside the 3rd batch
            full = self.processor.batch.rows >= self.settings.sink_batch_size
            if full or loop.time() - self.processor.batch.started >= interval:
                await self.flush()

    async def _apply(self, tp: TopicPartition, decision: Decision) -> None:
        """Process a chunk the log guard passed, or act on what it found."""
        assert self.consumer is not None
        if decision.note is not None:
            log.error("%s[%d]: %s", tp.topic, tp.partition, decision.note)
        if decision.reset is not None:
            await self._new_epoch(tp, decision.reset)
            return
        self._process(tp, decision.records)
        if decision.seek is not None:
            self.consumer.seek(tp, decision.seek)

    def _process(self, tp: TopicPartition, messages: Sequence[Any]) -> None:
        add, topic, partition = self.processor.add, tp.topic, tp.partition
        epoch = self.processor.epochs.get(partition, 0)
        for m in messages:
            add(Source(topic, partition, m.offset, m.timestamp, m.key, epoch), m.value)

    async def _check_high_watermarks(self) -> None:
        """A position above the partition's high watermark is out of range, also when the
        broker does not say so (the local broker answers such fetches with nothing)."""
        assert self.consumer is not None
        beyond = {}
        for tp in self.consumer.assignment():
            high, at = self.consumer.highwater(tp), self.guard.waiting_at(tp.partition)
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
            await self._apply(tp, self.guard.out_of_range(tp.partition, offset, starts[tp]))

    async def _new_epoch(self, tp: TopicPartition, reason: str) -> None:
        """The partition's log was replaced: store what was read of the old one, then read
        the new one from its start as a new log epoch."""
        assert self.consumer is not None
        assignments = self._assignments
        await self.flush()
        if self._assignments != assignments:
            return  # reassigned during the flush: recovery checks the log again
        epoch = self.processor.new_epoch(tp.partition)
        log.error(
            "log of %s[%d] was replaced (%s; topic recreated, or a broker that kept nothing): "
            "reading it again from its start as log epoch %d; events the store holds are dropped "
            "by event id", tp.topic, tp.partition, reason, epoch,
        )  # fmt: skip
        self.guard.restarted(tp.partition)
        await self.consumer.seek_to_beginning(tp)

    async def flush(self) -> None:
        """Insert the pending batch, then commit its offsets. Serialised with rebalances."""
        async with self._flush_lock:
            batch = self.processor.take()
            if not batch.ranges:
                return
            self.crash.hit("before_insert")
            if batch.dlq:
                await self._send_dead_letters(batch)
            topic = self.settings.events_topic
            if batch.dead_letters:
                await self._insert("agentaudit.dead_letters", DEAD_LETTER_COLUMNS, batch.dead_letters,
                                   batch.dedup_token(topic, "dead_letters"))
            self.crash.hit("between_inserts")
            if batch.events:
                await self._insert(INGEST_TABLE, INGEST_COLUMNS, batch.events,
                                   batch.dedup_token(topic, "events"))
            self.processor.stored(batch)
            self.crash.hit("after_insert")
            await self._commit(batch)
            self.flushes += 1
            if self.on_flush:
                self.on_flush(batch)

    async def _send_dead_letters(self, batch: Batch) -> None:
        """At least once to the DLQ topic; the `dead_letters` table is the exact record.

        A record the producer or broker refuses (too large, or any Kafka error) is sent again
        cut to a stub (`deadletter.shrink`); one refused even so is logged and counted
        (`counters.dlq_unsent`), never fatal: the batch's table rows are inserted either way.
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
                        self.processor.counters.dlq_unsent += 1
                        log.error("dead letter %s not sent to %s even cut down (%r); its "
                                  "dead_letters row is stored", dict(headers).get("source"), topic, exc)
                        return
                    log.warning("dead letter refused by %s (%r); sending it cut down", topic, exc)
                    key, value, headers = shrink(key, value, headers)

        await asyncio.gather(*(deliver(r) for r in batch.dlq))

    async def _insert(self, table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]], token: str) -> None:
        data = [list(col) for col in zip(*rows)]
        await store_call(log, self.store.insert, table, data, columns, dedup_token=token, stop=self._stopping)

    async def _commit(self, batch: Batch) -> None:
        assert self.consumer is not None
        topic = self.settings.events_topic
        offsets = {TopicPartition(topic, p): last + 1 for p, (_, last) in batch.ranges.items()}
        try:
            await self.consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # Harmless: positions are recovered from the store, the commit only reports progress.
            log.info("offset commit skipped (%s); the store holds the truth", exc)


async def run_worker(settings: Settings, store: Store, stop: asyncio.Event | None = None) -> SinkWorker:
    """Run a SinkWorker until `stop` is set (or forever); used by the CLI and the demo."""
    worker = SinkWorker(settings, store)
    task = asyncio.create_task(worker.run())
    if stop is not None:
        waiter = asyncio.create_task(stop.wait())
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        worker.stop()
        waiter.cancel()
    try:
        await task
    except KafkaError as exc:
        raise UserError(f"Kafka error in the sink: {exc}; check AGENTAUDIT_KAFKA_BOOTSTRAP") from None
    except DatabaseError as exc:
        raise StoreRefused(
            f"the store refused a batch of events ({' '.join(str(exc).split())[:500]}); nothing "
            "of it was committed: fix the cause (README, Reliability) and restart the worker"
        ) from None
    return worker
