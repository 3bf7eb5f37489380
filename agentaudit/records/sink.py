"""The record sink: lands the stream jobs' alerts, breaker transitions, drift scores and the
control topic's block/unblock messages in ClickHouse, exactly once.

A plain aiokafka consumer group member (group `<consumer_group>-records`) over the alerts
and control topics, shaped like the event sink (`agentaudit.sink.worker`): consume →
`RecordProcessor.add` → flush on size or interval. Flush order: dead-letter topic,
`dead_letters`, each record table, the `record_sink_offsets` row per partition, and only
then the Kafka offset commit. On every assignment, positions come from the store, read and
sought synchronously in the rebalance callback (why synchronous: `SinkWorker.recover`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from agentaudit.errors import UserError
from agentaudit.records.logcheck import check_record_log_matches_store
from agentaudit.records.processor import DEAD_LETTERS_TABLE, RecordBatch, RecordProcessor
from agentaudit.records.recovery import recover_records
from agentaudit.records.rows import OFFSETS_COLUMNS, OFFSETS_TABLE, RECORD_TABLES
from agentaudit.settings import Settings
from agentaudit.sink.rows import DEAD_LETTER_COLUMNS, Source
from agentaudit.store.protocol import Store
from agentaudit.store.retry import blocking_store_call, store_call

log = logging.getLogger("agentaudit.records")

FaultHook = Callable[[str], None]
"""Called at `before_insert`, `between_inserts`, `after_insert`; tests raise to simulate a crash."""


def _no_fault(_point: str) -> None:
    return None


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, sink: RecordSink) -> None:
        self.sink = sink

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.sink.flush()
        self.sink._positions.clear()

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.sink.recover(list(assigned))


class RecordSink:
    """Consumes the alerts and control topics into the store until `stop()`."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        on_flush: Callable[[RecordBatch], None] | None = None,
        fault: FaultHook = _no_fault,
        consumer_options: dict[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.on_flush = on_flush
        self.fault = fault
        self.consumer_options = consumer_options or {}
        self.topics = [settings.alerts_topic, settings.control_topic]
        self.group_id = settings.consumer_group + "-records"
        self.processor = RecordProcessor(settings.dedup_window)
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
        """Read watermarks, positions and recent ids from the store; seek every partition.

        Synchronous on purpose, like `SinkWorker.recover`: no await between the assignment
        and the seek, so nothing is fetched from Kafka's committed position first.
        """
        assert self.consumer is not None
        state = blocking_store_call(
            log, recover_records, self.store, self.topics, self.settings.dedup_window
        )
        self.processor.recover(state.watermarks, state.progress, state.recent_ids)
        self._positions = {
            tp: self.processor.resume_offset(tp.topic, tp.partition) for tp in assigned
        }
        for tp, offset in self._positions.items():
            self.consumer.seek(tp, offset)
        at = {f"{tp.topic}[{tp.partition}]": o for tp, o in self._positions.items()}
        log.info("assigned %s; resuming at %s", sorted(assigned), at)
        self.ready.set()

    async def run(self) -> None:
        """Consume until `stop()`; flushes and commits what it holds before returning."""
        s = self.settings
        self.producer = AIOKafkaProducer(
            bootstrap_servers=s.kafka_bootstrap, acks="all", linger_ms=5
        )
        options: dict[str, Any] = {
            "bootstrap_servers": s.kafka_bootstrap, "group_id": self.group_id,
            "enable_auto_commit": False, "auto_offset_reset": "earliest",
            "max_poll_records": s.sink_batch_size, **self.consumer_options,
        }  # fmt: skip
        self.consumer = AIOKafkaConsumer(**options)
        await self.producer.start()
        try:
            await self.consumer.start()
            self.consumer.subscribe(self.topics, listener=_Rebalance(self))
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
            room = max(1, self.settings.sink_batch_size - batch.row_count)
            records = await self.consumer.getmany(timeout_ms=wait_ms, max_records=room)
            for tp, messages in records.items():
                expected = self._positions.get(tp)
                if expected is None or messages[0].offset < expected:
                    # Not ours any more, or fetched before the store-based seek: dropped, the
                    # store's positions decide (see SinkWorker._consume).
                    log.info("dropping %d records of %s fetched before recovery", len(messages), tp)
                    continue
                for m in messages:
                    self.processor.add(
                        Source(tp.topic, tp.partition, m.offset, m.timestamp, m.key), m.value
                    )
                self._positions[tp] = messages[-1].offset + 1
            pending = self.processor.batch
            if not pending.ranges:
                continue
            full = pending.row_count >= self.settings.sink_batch_size
            if full or loop.time() - pending.started >= interval:
                await self.flush()

    async def flush(self) -> None:
        """Insert the pending batch, record its positions, commit. Serialised with rebalances."""
        async with self._flush_lock:
            batch = self.processor.take()
            if not batch.ranges:
                return
            self.fault("before_insert")
            if batch.dlq:
                await self._send_dead_letters(batch)
            if batch.dead_letters:
                await self._insert(DEAD_LETTERS_TABLE, DEAD_LETTER_COLUMNS, batch.dead_letters,
                                   batch.dedup_token(DEAD_LETTERS_TABLE))  # fmt: skip
            for table in RECORD_TABLES.values():
                rows = batch.rows.get(table.table)
                if rows:
                    self.fault("between_inserts")
                    await self._insert(
                        table.table, table.columns, rows, batch.dedup_token(table.table)
                    )
            # Only once every table holds its rows: where to resume (migration 0009).
            await self._insert(OFFSETS_TABLE, OFFSETS_COLUMNS, batch.offsets_rows(),
                               batch.dedup_token(OFFSETS_TABLE))  # fmt: skip
            self.processor.stored(batch)
            self.fault("after_insert")
            await self._commit(batch)
            self.flushes += 1
            if self.on_flush:
                self.on_flush(batch)

    async def _send_dead_letters(self, batch: RecordBatch) -> None:
        """At least once to the DLQ topic; the `dead_letters` table is the exact record."""
        assert self.producer is not None
        futures = [
            await self.producer.send(self.settings.dlq_topic, r.value, key=r.key, headers=r.headers)
            for r in batch.dlq
        ]
        await asyncio.gather(*futures)

    async def _insert(
        self, table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]], token: str
    ) -> None:
        data = [list(col) for col in zip(*rows)]
        await store_call(log, self.store.insert, table, data, columns, dedup_token=token)

    async def _commit(self, batch: RecordBatch) -> None:
        assert self.consumer is not None
        offsets = {TopicPartition(t, p): last + 1 for t, p, last in batch.offsets_rows()}
        try:
            await self.consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # Harmless: positions are recovered from the store, the commit only reports progress.
            log.info("offset commit skipped (%s); the store holds the truth", exc)


async def run_record_sink(settings: Settings, store: Store, stop: asyncio.Event) -> RecordSink:
    """Check the log matches the store, then run a RecordSink until `stop` is set."""
    await check_record_log_matches_store(settings, store)
    sink = RecordSink(settings, store)
    task = asyncio.create_task(sink.run())
    waiter = asyncio.create_task(stop.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    sink.stop()
    waiter.cancel()
    try:
        await task
    except KafkaError as exc:
        raise UserError(
            f"Kafka error in the record sink: {exc}; check AGENTAUDIT_KAFKA_BOOTSTRAP"
        ) from None
    return sink
