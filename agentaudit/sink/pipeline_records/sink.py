"""The record sink: lands the stream jobs' alerts, breaker transitions, drift scores and
heartbeats and the control topic's block/unblock messages in ClickHouse, exactly once.

A `PartitionSink` (`agentaudit.sink.base`: consume, log guard and log epochs, ordered flush,
dead-letter topic, commit) over the alerts and control topics, group
`<consumer_group>-records`. What is its own: recovery per (topic, partition, log epoch)
(`recovery.recover_records`), `RecordProcessor.add` per message, and the flush's inserts:
`dead_letters`, each record table, then the `record_sink_offsets` row per partition (only
once every table holds its rows: where to resume, migration 0009).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import TopicPartition

from agentaudit.settings import Settings
from agentaudit.sink.base import Fault, PartitionSink, Start, no_fault, run_sink
from agentaudit.sink.pipeline_records.recovery import RecordRecovery, recover_records
from agentaudit.sink.pipeline_records.routing import (
    DEAD_LETTERS_TABLE,
    RECORD_DEAD_LETTER_COLUMNS,
    RecordBatch,
    RecordProcessor,
)
from agentaudit.sink.pipeline_records.rows import OFFSETS_COLUMNS, OFFSETS_TABLE, RECORD_TABLES
from agentaudit.sink.processor import DlqRecord
from agentaudit.sink.rows import Source
from agentaudit.store.protocol import Store

log = logging.getLogger("agentaudit.sink.pipeline_records")

FaultHook = Fault
"""Called at `mid_batch`, `before_insert`, `between_inserts`, `after_insert`; tests raise to
simulate a crash."""


class RecordSink(PartitionSink[RecordBatch]):
    """Consumes the alerts and control topics (and the DLQ topic's `LAND` dead letters) into
    the store until `stop()`."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        on_flush: Callable[[RecordBatch], None] | None = None,
        fault: FaultHook = no_fault,
        consumer_options: dict[str, Any] | None = None,
        abandoned: Callable[[], bool] | None = None,
    ) -> None:
        super().__init__(
            settings,
            store,
            # the DLQ topic for the dead letters only it holds (OTLP, alert delivery): `LAND`
            topics=[settings.alerts_topic, settings.control_topic, settings.dlq_topic],
            group_id=settings.consumer_group + "-records",
            log=log,
            fault=fault,
            on_flush=on_flush,
            abandoned=abandoned,
            consumer_options=consumer_options,
        )
        self.processor = RecordProcessor(
            settings.dedup_window,
            dlq_topic=settings.dlq_topic,
            control_topic=settings.control_topic,
        )

    def _read_store(self, assigned: list[TopicPartition]) -> RecordRecovery:
        return recover_records(self.store, self.topics, self.settings.dedup_window)

    def _restore(
        self, state: RecordRecovery, assigned: list[TopicPartition]
    ) -> dict[TopicPartition, Start]:
        p = self.processor
        p.recover(state.watermarks, state.progress, state.recent_ids, state.epochs)
        starts: dict[TopicPartition, Start] = {}
        for tp in assigned:
            key = (tp.topic, tp.partition)
            starts[tp] = (p.resume_offset(*key), state.anchors.get(key))
        return starts

    def _epoch(self, tp: TopicPartition) -> int:
        return self.processor.epochs.get((tp.topic, tp.partition), 0)

    def _begin_epoch(self, tp: TopicPartition) -> int:
        return self.processor.new_epoch((tp.topic, tp.partition))

    def _process(self, tp: TopicPartition, messages: Sequence[Any]) -> None:
        add, topic, partition, epoch = self.processor.add, tp.topic, tp.partition, self._epoch(tp)
        for m in messages:
            add(
                Source(topic, partition, m.offset, m.timestamp, m.key, epoch, m.headers),
                m.value,
                m.headers,
            )

    def _pending(self) -> tuple[int, float] | None:
        batch = self.processor.batch
        return (batch.row_count, batch.started) if batch.ranges else None

    def _take(self) -> RecordBatch | None:
        batch = self.processor.take()
        return batch if batch.ranges else None

    def _dead_letters_out(self, batch: RecordBatch) -> list[DlqRecord]:
        return batch.dlq

    async def _write(self, batch: RecordBatch) -> None:
        if batch.dead_letters:
            await self._insert(
                DEAD_LETTERS_TABLE,
                RECORD_DEAD_LETTER_COLUMNS,
                batch.dead_letters,
                batch.dedup_token(DEAD_LETTERS_TABLE),
            )
        for table in RECORD_TABLES.values():
            rows = batch.rows.get(table.table)
            if rows:
                self.fault("between_inserts")
                await self._insert(table.table, table.columns, rows, batch.dedup_token(table.table))
        # Only once every table holds its rows: where to resume (migration 0009).
        await self._insert(
            OFFSETS_TABLE,
            OFFSETS_COLUMNS,
            batch.offsets_table_rows(),
            batch.dedup_token(OFFSETS_TABLE),
        )

    def _stored(self, batch: RecordBatch) -> None:
        self.processor.stored(batch)

    def _offsets(self, batch: RecordBatch) -> dict[TopicPartition, int]:
        return {TopicPartition(t, p): last + 1 for t, p, last in batch.offsets_rows()}

    def _dlq_unsent(self) -> None:
        self.processor.counters.dlq_unsent += 1


async def run_record_sink(
    settings: Settings,
    store: Store,
    stop: asyncio.Event,
    *,
    watch: Callable[[RecordSink], None] | None = None,
) -> RecordSink:
    """Run a RecordSink until `stop` is set; used by the worker. `watch` sees the sink
    before it starts (the worker's metrics set its `on_flush`)."""
    sink = RecordSink(settings, store)
    if watch is not None:
        watch(sink)
    await run_sink(sink, stop, "pipeline records")
    return sink
