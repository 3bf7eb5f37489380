"""The sink worker: a plain aiokafka consumer group member that lands events in ClickHouse.

Loop: consume → `SinkProcessor.add` → flush on size or interval. Flush order is what makes
it exactly once: dead-letter topic, `dead_letters` insert, `events` insert, watermarks,
and only then the Kafka offset commit. On every assignment the positions come from the
store, not from Kafka's committed offsets, so a crash at any point replays into skips.
Why not a faust agent: see README "Why the sink is not a faust agent".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from agentaudit.errors import UserError
from agentaudit.settings import Settings
from agentaudit.sink.deadletter import shrink
from agentaudit.sink.faults import CrashPlan
from agentaudit.sink.processor import Batch, DlqRecord, SinkProcessor
from agentaudit.sink.recovery import recover
from agentaudit.sink.rows import DEAD_LETTER_COLUMNS, INGEST_COLUMNS, INGEST_TABLE, Source
from agentaudit.store.protocol import Store
from agentaudit.store.retry import blocking_store_call, store_call
from schemas.pricing import load_pricing

log = logging.getLogger("agentaudit.sink")


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: SinkWorker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.worker.flush()
        self.worker._positions.clear()

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.worker.recover(list(assigned))


class SinkWorker:
    """Consumes the events topic into the store until `stop()`."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        crash_plan: CrashPlan | None = None,
        on_flush: Callable[[Batch], None] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
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
        # Next offset to process per assigned partition, from the store at assignment time.
        self._positions: dict[TopicPartition, int] = {}

    def stop(self) -> None:
        self._stopping.set()

    def recover(self, assigned: list[TopicPartition]) -> None:
        """Read watermarks, chain heads and recent ids from the store; seek every partition.

        Deliberately synchronous: aiokafka starts fetching from the committed offsets as soon
        as partitions are assigned, and a seek issued after records were delivered stalls the
        group consumer (seen with aiokafka 0.14). With no await between the assignment and
        the seek, nothing is fetched from the wrong position. It blocks the loop only during a
        rebalance, for a few store queries.
        """
        assert self.consumer is not None
        parts = sorted(tp.partition for tp in assigned if tp.topic == self.settings.events_topic)
        state = blocking_store_call(
            log, recover, self.store, self.settings.events_topic, parts, self.settings.dedup_window
        )
        self.processor.recover(
            state.event_watermark, state.dead_letter_watermark, state.heads, state.recent_ids
        )
        self._positions = {tp: self.processor.resume_offset(tp.partition) for tp in assigned}
        for tp, offset in self._positions.items():
            self.consumer.seek(tp, offset)
        log.info("assigned partitions %s; resuming at %s", parts,
                 {p: self.processor.resume_offset(p) for p in parts})
        self.ready.set()

    async def run(self) -> None:
        """Consume until `stop()`; flushes and commits what it holds before returning."""
        s = self.settings
        self.producer = AIOKafkaProducer(
            bootstrap_servers=s.kafka_bootstrap, acks="all", compression_type="lz4", linger_ms=5
        )
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=s.kafka_bootstrap, group_id=s.consumer_group,
            enable_auto_commit=False, auto_offset_reset="earliest",
            max_poll_records=s.sink_batch_size, fetch_max_bytes=64 << 20,
            max_partition_fetch_bytes=16 << 20,
        )  # fmt: skip
        await self.producer.start()
        try:
            await self.consumer.start()
            self.consumer.subscribe([s.events_topic], listener=_Rebalance(self))
            await self._consume()
            await self.flush()
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
            records = await self.consumer.getmany(timeout_ms=wait_ms, max_records=room)
            for tp, messages in records.items():
                expected = self._positions.get(tp)
                if expected is None or messages[0].offset < expected:
                    # Not ours any more, or fetched from Kafka's committed position before the
                    # store-based seek: the store's watermarks decide, these are dropped.
                    log.info("dropping %d records of %s fetched before recovery", len(messages), tp)
                    continue
                for m in messages:
                    self.processor.add(Source(tp.topic, tp.partition, m.offset, m.timestamp, m.key), m.value)
                self._positions[tp] = messages[-1].offset + 1
            if not self.processor.batch.ranges:
                continue
            if was_empty:
                self.crash.hit("mid_batch")  # once per batch: "mid_batch:3" dies inside the 3rd batch
            full = self.processor.batch.rows >= self.settings.sink_batch_size
            if full or loop.time() - self.processor.batch.started >= interval:
                await self.flush()

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
        await store_call(log, self.store.insert, table, data, columns, dedup_token=token)

    async def _commit(self, batch: Batch) -> None:
        assert self.consumer is not None
        topic = self.settings.events_topic
        offsets = {TopicPartition(topic, p): last + 1 for p, (_, last) in batch.ranges.items()}
        try:
            await self.consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # Harmless: positions are recovered from the store, the commit only reports progress.
            log.info("offset commit skipped (%s); the store holds the truth", exc)


async def check_log_matches_store(settings: Settings, store: Store, timeout: float = 10.0) -> None:
    """Refuse to sink a topic whose log is not the one the store's offsets came from.

    For each partition, the message at the highest stored `events` offset must be there in
    Kafka and carry the same `event_id`. Otherwise the topic was recreated or the broker
    lost its data (the local broker keeps nothing across restarts), and sinking would
    silently skip new events as "already stored". (End offsets cannot be used: the local
    broker under-reports them.)
    """
    rows = await asyncio.to_thread(
        lambda: store.query(
            "SELECT kafka_partition, kafka_offset, toString(event_id) FROM agentaudit.events "
            "WHERE kafka_topic = {topic:String} ORDER BY kafka_offset DESC LIMIT 1 BY kafka_partition",
            {"topic": settings.events_topic},
        ).result_rows
    )
    if not rows:
        return
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False,
                                auto_offset_reset="none", max_poll_records=1)  # fmt: skip
    await consumer.start()
    try:
        for partition, offset, event_id in rows:
            tp = TopicPartition(settings.events_topic, int(partition))
            consumer.assign([tp])
            consumer.seek(tp, int(offset))
            try:
                found = await consumer.getmany(tp, timeout_ms=int(timeout * 1000), max_records=1)
            except KafkaError:
                found = {}
            messages = found.get(tp, [])
            if not messages or messages[0].offset != offset or event_id.encode() not in (messages[0].value or b""):
                raise UserError(
                    f"the store's {tp.topic}[{tp.partition}] offset {offset} (event {event_id}) is not in "
                    "the broker's log: the topic was recreated or the broker lost its data (the local "
                    "broker keeps nothing across restarts). Use a new store (AGENTAUDIT_DATA_DIR) for this log"
                )
    finally:
        await consumer.stop()


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
    return worker
