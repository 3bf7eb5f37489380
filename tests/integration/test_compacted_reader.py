"""The one compacted-topic reader (`agentaudit_sdk.compacted`) on the real local broker."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import AIOKafkaProducer

from agentaudit.broker import ensure_topics
from agentaudit.settings import Settings
from agentaudit_sdk.compacted import CompactedReader, TopicMissing, Unreachable, read_latest
from tests.helpers_wait import poll_until
from tests.integration.helpers import produce_raw

pytestmark = pytest.mark.integration

Seen = list[tuple[str, bytes | None, bytes | None]]


def _collector(seen: Seen):  # type: ignore[no-untyped-def]
    async def on_record(topic: str, key: bytes | None, value: bytes | None) -> None:
        seen.append((topic, key, value))

    return on_record


async def test_read_latest_keeps_the_last_value_per_key_and_tombstones_delete(
    settings: Settings,
) -> None:
    await ensure_topics(settings)
    topic = settings.budgets_topic
    records: list[tuple[bytes | None, bytes | None]] = [
        (f"k{i % 7}".encode(), f"v{i}".encode()) for i in range(40)
    ]
    records += [(b"k1", None), (b"k2", b""), (None, b"keyless"), (b"k3", b"last")]
    await produce_raw(settings, records, topic)
    # Tiny fetches: the end is reached over many polls, not one.
    latest = await read_latest(
        settings.kafka_bootstrap, topic, timeout_s=15, client_id="t", max_partition_fetch_bytes=64
    )
    want = {f"k{i % 7}".encode(): f"v{i}".encode() for i in range(40)}
    del want[b"k1"], want[b"k2"]
    want[b"k3"] = b"last"
    assert latest == want


async def test_a_missing_topic_reads_as_empty(settings: Settings) -> None:
    assert (
        await read_latest(settings.kafka_bootstrap, "no-such-topic-x", timeout_s=10, client_id="t")
        == {}
    )


async def test_an_unreachable_broker_is_a_clear_error_within_the_timeout() -> None:
    began = time.monotonic()
    with pytest.raises(Unreachable, match=r"127\.0\.0\.1:1 within 1s"):
        await read_latest("127.0.0.1:1", "topic", timeout_s=1, client_id="t")
    assert time.monotonic() - began < 10


async def test_a_required_topic_that_is_missing_is_a_clear_error(settings: Settings) -> None:
    reader = CompactedReader(
        settings.kafka_bootstrap, ["no-such-topic-y"], client_id="t", require_topics=True
    )
    with pytest.raises(TopicMissing, match="no-such-topic-y"):
        await reader.open(10)
    await reader.close()


async def test_follow_calls_back_per_record_catches_up_once_and_resumes_after_reopening(
    settings: Settings,
) -> None:
    await ensure_topics(settings)
    topics = [settings.budgets_topic, settings.control_topic]
    await produce_raw(settings, [(b"a", b"1"), (b"b", b"2")], topics[0])
    await produce_raw(settings, [(b"c", b"3")], topics[1])
    seen: Seen = []
    caught_up: list[int] = []
    reader = CompactedReader(settings.kafka_bootstrap, topics, client_id="t")

    async def session() -> None:
        await reader.open(10)
        try:
            await reader.follow(_collector(seen), lambda: caught_up.append(len(seen)))
        finally:
            await reader.close()

    task = asyncio.create_task(session())
    try:
        await poll_until(lambda: bool(caught_up), 15, "the end of both topics")
        assert caught_up == [3]  # the end is reached after the records already there
        assert sorted(seen) == sorted(
            [(topics[0], b"a", b"1"), (topics[0], b"b", b"2"), (topics[1], b"c", b"3")]
        )
        await produce_raw(settings, [(b"a", None)], topics[0])
        await poll_until(lambda: len(seen) == 4, 15, "the tombstone", detail=lambda: repr(seen))
        assert seen[-1] == (topics[0], b"a", None)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    # A new session resumes where the last stopped: nothing is delivered twice.
    await produce_raw(settings, [(b"d", b"4")], topics[1])
    task = asyncio.create_task(session())
    try:
        await poll_until(
            lambda: len(seen) == 5, 15, "the record after reopening", detail=lambda: repr(seen)
        )
        assert seen[-1] == (topics[1], b"d", b"4")
        assert caught_up == [3]  # once in the reader's life
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert len(seen) == 5


async def test_read_latest_keeps_a_keys_later_record_across_partitions(
    settings: Settings,
) -> None:
    """Before, a key in two partitions read as what the partition read last held."""
    await ensure_topics(settings)
    topic = settings.control_topic
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        t0 = 1_767_225_600_000  # pinned record times
        for i, (partition, key, value) in enumerate(
            [(1, b"a", b"old"), (0, b"b", b"old"), (0, b"a", b"new"), (1, b"b", b"new")]
        ):
            await producer.send_and_wait(
                topic, value, key=key, partition=partition, timestamp_ms=t0 + 1000 * i
            )
    finally:
        await producer.stop()
    latest = await read_latest(settings.kafka_bootstrap, topic, timeout_s=15, client_id="t")
    assert latest == {b"a": b"new", b"b": b"new"}
