"""The sink reads the next batch while the store takes the current one, and stays exactly once.

A store whose first `events` insert waits on a gate (a real chDB store behind it): the sink
must go on consuming meanwhile, store nothing out of order, and commit no offset before the
store took the data.
"""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import TopicPartition

from agentaudit.broker import ensure_topics
from agentaudit.settings import Settings
from agentaudit.sink.worker import SinkWorker
from agentaudit.store import open_store
from agentaudit.store.migrations import migrate
from tests.factories import event_dict, wire
from tests.helpers_wait import poll_until
from tests.integration.held_store import HeldInsert
from tests.integration.helpers import assert_chains_valid, produce_raw, scalar

pytestmark = pytest.mark.integration

EVENTS = 400
BATCH = 50


async def test_the_sink_consumes_while_an_insert_is_in_flight(settings: Settings) -> None:
    settings = settings.model_copy(update={"sink_batch_size": BATCH, "partitions": 1})
    await ensure_topics(settings)
    await produce_raw(settings, [(b"acme", wire(event_dict("acme"))) for _ in range(EVENTS)])
    with open_store(settings, own=True) as real:
        migrate(real)
        store = HeldInsert(real, stored_first=False)
        worker = SinkWorker(settings, store)  # type: ignore[arg-type]
        task = asyncio.create_task(worker.run())
        try:
            await poll_until(store.held.is_set, 30, "the first insert started", interval=0.01)
            consumer = worker.consumer
            assert consumer is not None
            tp = TopicPartition(settings.events_topic, 0)
            # The first batch is held by the store; the next one is read meanwhile.
            await poll_until(
                lambda: worker.processor.batch.rows >= BATCH,
                30,
                "a full next batch consumed while the first insert waits",
                interval=0.01,
            )
            assert scalar(real, "SELECT count() FROM agentaudit.events") == 0
            assert await consumer.committed(tp) is None  # nothing committed before it is stored
            store.release.set()
            await poll_until(
                lambda: worker.processor.counters.accepted >= EVENTS,
                30,
                "all accepted",
                interval=0.01,
            )
            await poll_until(
                lambda: worker.flushes >= EVENTS // BATCH, 30, "all flushed", interval=0.01
            )
            assert await consumer.committed(tp) == EVENTS
        finally:
            store.release.set()
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
        store = HeldInsert(real, stored_first=False)
        worker = SinkWorker(settings, store)  # type: ignore[arg-type]
        task = asyncio.create_task(worker.run())
        try:
            await poll_until(store.held.is_set, 30, "the first insert started", interval=0.01)
            assert worker.processor.counters.accepted == 100
            await produce_raw(settings, second[:1])
            await poll_until(
                lambda: worker.processor.batch.rows == 1,
                30,
                "the next batch started",
                interval=0.01,
            )
            loop = asyncio.get_running_loop()
            started = worker.processor.batch.started
            await poll_until(
                lambda: loop.time() - started > 0.05, 30, "the next batch is due", interval=0.01
            )
            await produce_raw(settings, second[1:])
            await poll_until(
                lambda: worker.processor.batch.rows == 100,
                30,
                "the due batch took what arrived while the insert waits",
                interval=0.01,
            )
            store.release.set()
            await poll_until(lambda: worker.flushes >= 2, 30, "both batches stored", interval=0.01)
        finally:
            store.release.set()
            worker.stop()
            await task
        assert scalar(real, "SELECT count() FROM agentaudit.events") == 200
        assert assert_chains_valid(real) == 200
