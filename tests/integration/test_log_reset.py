"""The events topic's log replaced under the sink (issue 9 B): nothing emitted after it is lost.

The local broker keeps nothing across restarts, like a topic deleted and recreated in
production: offsets start again at 0, below the store's watermarks. Each test runs its own
broker so it can restart it on the same port while a sink is connected.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence

import pytest
from aiokafka import AIOKafkaProducer

from agentaudit.broker import LocalBroker, ensure_topics
from agentaudit.settings import Settings
from agentaudit.sink.worker import SinkWorker
from agentaudit.store import open_store
from agentaudit.store.migrations import migrate
from agentaudit.store.protocol import Store
from tests.factories import event_dict, wire
from tests.helpers_wait import poll_until
from tests.integration.helpers import assert_chains_valid, scalar, sink_until

pytestmark = pytest.mark.integration


@pytest.fixture
def own_broker() -> Iterator[LocalBroker]:
    """A broker of this test only, restartable on the same port (`stop()`, then `start()`)."""
    local = LocalBroker()
    local.start()
    try:
        yield local
    finally:
        local.stop()


@pytest.fixture
def reset_settings(settings: Settings, own_broker: LocalBroker) -> Settings:
    return settings.model_copy(update={"kafka_bootstrap": own_broker.bootstrap})


async def produce(settings: Settings, messages: Sequence[tuple[int, bytes]]) -> None:
    """(partition, value) pairs, keyed by a tenant that is not the partitioner's choice."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        for partition, value in messages:
            await producer.send(settings.events_topic, value, key=b"acme", partition=partition)
        await producer.flush()
    finally:
        await producer.stop()


def events(per_partition: dict[int, int], tenants: int = 4) -> list[tuple[int, bytes]]:
    return [
        (p, wire(event_dict(tenant=f"tenant-{i % tenants}")))
        for p, n in per_partition.items()
        for i in range(n)
    ]


async def restart(broker: LocalBroker, settings: Settings) -> None:
    """What an operator (or the SDK's producer) sees: the broker back, topics recreated, empty."""
    broker.stop()
    broker.start()
    await ensure_topics(settings)


def count(store: Store) -> int:
    return int(scalar(store, "SELECT count() FROM agentaudit.events"))


async def wait_for(
    condition: Callable[[], bool], timeout: float, what: Callable[[], object]
) -> None:
    # polling the store another task writes
    await poll_until(condition, timeout, "the store", interval=0.2, detail=lambda: repr(what()))


def assert_exactly(store: Store, sent: int) -> None:
    assert count(store) == sent
    assert scalar(store, "SELECT uniqExact(event_id) FROM agentaudit.events") == sent
    assert assert_chains_valid(store) == sent


async def test_broker_restarted_under_a_running_sink_loses_nothing(
    reset_settings: Settings, own_broker: LocalBroker
) -> None:
    s = reset_settings
    await ensure_topics(s)
    before = events({0: 120, 1: 120, 2: 60})
    after = events({0: 40, 1: 200, 2: 5})  # below the old watermarks on 0 and 2, past them on 1
    with open_store(s, own=True) as store:
        migrate(store)
        worker = SinkWorker(s, store)
        task = asyncio.create_task(worker.run())
        try:
            await produce(s, before)
            await wait_for(lambda: count(store) == len(before), 60, lambda: count(store))
            await restart(own_broker, s)
            await produce(s, after)
            total = len(before) + len(after)
            await wait_for(
                lambda: task.done() or count(store) == total,
                120,
                lambda: (count(store), worker.processor.counters),
            )
        finally:
            worker.stop()
            await task
        assert_exactly(store, total)
        epochs = store.query(
            "SELECT kafka_partition, log_epoch, count() FROM agentaudit.events "
            "GROUP BY ALL ORDER BY ALL"
        ).result_rows
        assert epochs == [(0, 0, 120), (0, 1, 40), (1, 0, 120), (1, 1, 200), (2, 0, 60), (2, 1, 5)]


async def test_sink_restarted_after_a_log_reset_continues_the_chains(
    reset_settings: Settings, own_broker: LocalBroker
) -> None:
    """A new worker on the old store and the new log: it must neither refuse forever nor skip.
    A re-sent event (an SDK retry, a spool replay) of the old log is stored once."""
    s = reset_settings
    await ensure_topics(s)
    before = events({0: 50, 1: 50, 2: 50})
    with open_store(s, own=True) as store:
        migrate(store)
        await produce(s, before)
        await sink_until(s, store, lambda w: w.processor.counters.accepted >= len(before))
        await restart(own_broker, s)
        resent = before[-1]
        after = [*events({0: 80, 1: 10}), (2, resent[1])]  # 0: past the old watermark; 1, 2: short
        await produce(s, after)
        new = len(after) - 1
        worker = await sink_until(
            s,
            store,
            lambda w: w.processor.counters.accepted >= new and w.processor.counters.duplicates >= 1,
            timeout=90,
        )
        assert worker.processor.epochs == {0: 1, 1: 1, 2: 1}
        assert_exactly(store, len(before) + new)
