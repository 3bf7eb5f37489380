"""Helpers for integration tests: produce raw messages, run a sink until a condition, read the
trail."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from clickhouse_connect.driver.exceptions import DatabaseError

from agentaudit.errors import BadQuery, StoreUnavailable
from agentaudit.settings import Settings
from agentaudit.sink.worker import SinkWorker
from agentaudit.store import open_store
from agentaudit.store.protocol import Store
from agentaudit_schemas.canonical import GENESIS_HASH


async def produce_raw(
    settings: Settings,
    messages: Sequence[tuple[bytes | None, bytes | None]],
    topic: str | None = None,
    headers: Sequence[tuple[str, bytes]] | None = None,
) -> None:
    """Write (key, value) pairs in order to `topic` (default: the events topic), each with
    `headers`."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, max_request_size=2 << 20
    )
    await producer.start()
    try:
        for key, value in messages:
            await producer.send(topic or settings.events_topic, value, key=key, headers=headers)
        await producer.flush()
    finally:
        await producer.stop()


async def produce_placed(
    settings: Settings,
    messages: Sequence[tuple[int | None, bytes | None, bytes | None]],
    **options: Any,
) -> None:
    """Write (partition, key, value) triples in order to the events topic; partition None
    leaves it to the producer's partitioner."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, **options)
    await producer.start()
    try:
        for partition, key, value in messages:
            await producer.send(settings.events_topic, value, key=key, partition=partition)
        await producer.flush()
    finally:
        await producer.stop()


async def sink_until(
    settings: Settings, store: Store, done: Callable[[SinkWorker], bool], timeout: float = 60
) -> SinkWorker:
    """Run an in-process sink until `done(worker)` holds after a flush; fail after `timeout`."""
    flushed = asyncio.Event()
    worker = SinkWorker(settings, store, on_flush=lambda _b: flushed.set())
    task = asyncio.create_task(worker.run())
    deadline = time.monotonic() + timeout
    try:
        while not done(worker):
            if task.done():
                task.result()
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"sink did not finish in {timeout}s: {worker.processor.counters}"
            flushed.clear()
            try:
                await asyncio.wait_for(flushed.wait(), min(remaining, 1.0))
            except TimeoutError:
                pass
    finally:
        worker.stop()
        await task
    return worker


def served_scalar(settings: Settings, sql: str) -> Any | None:
    """`sql`'s one value through the process that owns the store; None while it is not
    served yet, or served before its migrations ran (the worker starts serving first)."""
    with (
        contextlib.suppress(StoreUnavailable, BadQuery, DatabaseError),
        open_store(settings, attach=True) as store,
    ):
        return scalar(store, sql)
    return None


@contextlib.asynccontextmanager
async def served_store(
    settings: Settings, worker: asyncio.Task[Any], timeout_s: float = 60
) -> AsyncIterator[Store]:
    """The store through the worker that owns it, once it serves it.

    A test reading beside an in-process worker must never open the store itself: opening
    it before the worker does would make the test its owner, and the worker would then
    fail to own it ("already owned by this process")."""
    deadline = time.monotonic() + timeout_s
    while served_scalar(settings, "SELECT count() FROM agentaudit.events") is None:
        if worker.done():
            worker.result()  # the worker's own error, not a timeout
            raise AssertionError("the worker stopped before it served the store")
        if time.monotonic() > deadline:
            raise AssertionError(f"the worker did not serve the store within {timeout_s} s")
        await asyncio.sleep(0.1)
    with open_store(settings, attach=True) as store:
        yield store


def scalar(store: Store, sql: str, params: dict[str, Any] | None = None) -> Any:
    return store.query(sql, params).result_rows[0][0]


def assert_chains_valid(store: Store) -> int:
    """Every chain, (tenant, topic, partition): seq 1..n without gaps or repeats, each
    prev_hash = previous row_hash, each row_hash = SHA-256(prev_hash ‖ payload), offsets
    increasing in chain order within a log epoch. Returns the number of rows checked."""
    rows = store.query(
        "SELECT tenant_id, kafka_topic, kafka_partition, chain_seq, prev_hash, row_hash, payload, "
        "log_epoch, kafka_offset FROM agentaudit.events "
        "ORDER BY tenant_id, kafka_topic, kafka_partition, chain_seq"
    ).result_rows
    chain, expected_seq, prev, source = None, 0, GENESIS_HASH, (-1, -1)
    for t, topic, part, seq, prev_hash, row_hash, payload, epoch, offset in rows:
        if (t, topic, part) != chain:
            chain, expected_seq, prev, source = (t, topic, part), 0, GENESIS_HASH, (-1, -1)
        expected_seq += 1
        payload = payload if isinstance(payload, bytes) else payload.encode()
        prev_hash = prev_hash.decode() if isinstance(prev_hash, bytes) else prev_hash
        row_hash = row_hash.decode() if isinstance(row_hash, bytes) else row_hash
        assert seq == expected_seq, f"{chain}: gap or repeat at seq {seq}, expected {expected_seq}"
        assert prev_hash == prev, f"{chain}: broken link at seq {seq}"
        assert row_hash == hashlib.sha256(prev.encode() + payload).hexdigest(), (
            f"{chain}: bad hash at {seq}"
        )
        assert (epoch, offset) > source, (
            f"{chain}: seq {seq} at {(epoch, offset)} is not after {source}"
        )
        prev, source = row_hash, (epoch, offset)
    return len(rows)
