"""The sink reads the next batch while the store takes the current one, and stays exactly once.

A store whose first `events` insert waits on a gate (a real chDB store behind it): the sink
must go on consuming meanwhile, store nothing out of order, and commit no offset before the
store took the data.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest
from aiokafka import TopicPartition

from agentaudit.broker import ensure_topics
from agentaudit.settings import Settings
from agentaudit.sink.rows import INGEST_TABLE
from agentaudit.sink.worker import SinkWorker
from agentaudit.store import open_store
from agentaudit.store.migrations import migrate
from agentaudit.store.protocol import Store
from tests.factories import event_dict, wire
from tests.integration.helpers import assert_chains_valid, produce_raw, scalar

pytestmark = pytest.mark.integration

EVENTS = 400
BATCH = 50


class GatedStore:
    """Delegates to `store`; the first insert into `events_ingest` waits for `gate`."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.gate = threading.Event()
        self.waiting = threading.Event()
        self.first = True

    def insert(
        self,
        table: str,
        columns: Sequence[Sequence[Any]],
        column_names: Sequence[str],
        *,
        dedup_token: str | None = None,
    ) -> None:
        if table == INGEST_TABLE and self.first:
            self.first = False
            self.waiting.set()
            assert self.gate.wait(60), "the test never opened the gate"
        self.store.insert(table, columns, column_names, dedup_token=dedup_token)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


async def _until(condition: Any, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        await asyncio.sleep(0.01)  # polling in-process state the sink updates


async def test_the_sink_consumes_while_an_insert_is_in_flight(settings: Settings) -> None:
    settings = settings.model_copy(update={"sink_batch_size": BATCH, "partitions": 1})
    await ensure_topics(settings)
    await produce_raw(settings, [(b"acme", wire(event_dict("acme"))) for _ in range(EVENTS)])
    with open_store(settings, own=True) as real:
        migrate(real)
        store = GatedStore(real)
        worker = SinkWorker(settings, store)  # type: ignore[arg-type]
        task = asyncio.create_task(worker.run())
        try:
            await _until(store.waiting.is_set, "the first insert started")
            consumer = worker.consumer
            assert consumer is not None
            tp = TopicPartition(settings.events_topic, 0)
            # The first batch is held by the store; the next one is read meanwhile.
            await _until(
                lambda: worker.processor.batch.rows >= BATCH,
                "a full next batch consumed while the first insert waits",
            )
            assert scalar(real, "SELECT count() FROM agentaudit.events") == 0
            assert await consumer.committed(tp) is None  # nothing committed before it is stored
            store.gate.set()
            await _until(lambda: worker.processor.counters.accepted >= EVENTS, "all accepted")
            await _until(lambda: worker.flushes >= EVENTS // BATCH, "all flushed")
            assert await consumer.committed(tp) == EVENTS
        finally:
            store.gate.set()
            worker.stop()
            await task
        assert scalar(real, "SELECT count() FROM agentaudit.events") == EVENTS
        assert scalar(real, "SELECT uniqExact(event_id) FROM agentaudit.events") == EVENTS
        assert assert_chains_valid(real) == EVENTS  # one chain, in order, no gap


async def test_a_due_batch_keeps_growing_until_the_insert_in_flight_ends(
    settings: Settings,
) -> None:
    """Past its flush interval, the next batch still takes what arrives while the store is
    busy, instead of the sink waiting idle for the insert in flight."""
    settings = settings.model_copy(
        update={"sink_batch_size": 10_000, "partitions": 1, "sink_flush_interval_ms": 50}
    )
    await ensure_topics(settings)
    first = [(b"acme", wire(event_dict("acme"))) for _ in range(100)]
    second = [(b"acme", wire(event_dict("acme"))) for _ in range(100)]
    await produce_raw(settings, first)
    with open_store(settings, own=True) as real:
        migrate(real)
        store = GatedStore(real)
        worker = SinkWorker(settings, store)  # type: ignore[arg-type]
        task = asyncio.create_task(worker.run())
        try:
            await _until(store.waiting.is_set, "the first insert started")
            assert worker.processor.counters.accepted == 100
            await produce_raw(settings, second[:1])
            await _until(lambda: worker.processor.batch.rows == 1, "the next batch started")
            loop = asyncio.get_running_loop()
            started = worker.processor.batch.started
            await _until(lambda: loop.time() - started > 0.05, "the next batch is due")
            await produce_raw(settings, second[1:])
            await _until(
                lambda: worker.processor.batch.rows == 100,
                "the due batch took what arrived while the insert waits",
            )
            store.gate.set()
            await _until(lambda: worker.flushes >= 2, "both batches stored")
        finally:
            store.gate.set()
            worker.stop()
            await task
        assert scalar(real, "SELECT count() FROM agentaudit.events") == 200
        assert assert_chains_valid(real) == 200
