"""SDK → real broker → sink → chDB: every event stored once, invalid input dead-lettered."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer

from agentaudit.broker import ensure_topics
from agentaudit.demo.malformed import MALFORMED
from agentaudit.settings import Settings
from agentaudit.sink.deadletter import SOURCE_HEADER_PREFIX
from agentaudit.store import open_store
from agentaudit.store.migrations import migrate
from tests.factories import event_dict, wire
from tests.integration.helpers import assert_chains_valid, produce_raw, scalar, sink_until

pytestmark = pytest.mark.integration


def _emit_fleet(settings: Settings, n: int) -> int:
    from agentaudit_sdk import Client

    client = Client.from_settings(settings, agent_id="support-bot", agent_version="1.0.0")
    for i in range(n):
        with (
            client.bind(tenant_id=f"tenant-{i % 5}"),
            client.tool_call("crm_lookup", "lookup", {"id": i}),
        ):
            pass
    assert client.flush(30, delivered=True)
    sent = client.stats.sent
    client.shutdown(5)
    return sent


async def test_sdk_events_and_malformed_messages_land_exactly(settings: Settings) -> None:
    await ensure_topics(settings)
    sent = await asyncio.to_thread(_emit_fleet, settings, 600)
    assert sent == 600
    # With headers, among them names of the sink's own DLQ headers and the record sink's `land`.
    headers = [("traceparent", b"00-ab-01"), ("land", b"dead_letters"), ("reason", b"x")]
    await produce_raw(settings, [(k, v) for k, v, _ in MALFORMED], headers=headers)
    total = sent + len(MALFORMED)
    with open_store(settings, own=True) as store:
        migrate(store)
        await sink_until(
            settings,
            store,
            lambda w: w.processor.counters.accepted + w.processor.counters.dead_lettered >= total,
        )
        assert scalar(store, "SELECT count() FROM agentaudit.events") == sent
        assert scalar(store, "SELECT uniqExact(event_id) FROM agentaudit.events") == sent
        assert assert_chains_valid(store) == sent
        reasons = store.query(
            "SELECT reason, count() FROM agentaudit.dead_letters GROUP BY reason ORDER BY reason"
        ).result_rows
        expected: dict[str, int] = {}
        for _k, _v, reason in MALFORMED:
            expected[reason] = expected.get(reason, 0) + 1
        assert dict(reasons) == expected
        originals = {
            r[0] for r in store.query("SELECT original FROM agentaudit.dead_letters").result_rows
        }
        assert {v for _k, v, _r in MALFORMED} == {
            o if isinstance(o, bytes) else o.encode() for o in originals
        }
        # Each dead letter keeps its record's headers (replayable as it came; kept since 0024).
        kept = store.query("SELECT DISTINCT kafka_headers FROM agentaudit.dead_letters")
        assert kept.result_rows == [([{"name": n, "value": v.decode()} for n, v in headers],)]

    # The dead-letter topic carries the same messages with the reason in a header.
    consumer = AIOKafkaConsumer(
        settings.dlq_topic,
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
        max_partition_fetch_bytes=4 << 20,
    )
    await consumer.start()
    try:
        got: list[str] = []
        carried: list[list[tuple[str, bytes]]] = []
        while len(got) < len(MALFORMED):
            records = await consumer.getmany(timeout_ms=5000)
            assert records, "dead-letter topic is missing messages"
            got += [dict(m.headers)["reason"].decode() for batch in records.values() for m in batch]
            carried += [list(m.headers)[-3:] for batch in records.values() for m in batch]
        assert sorted(got) == sorted(r for _k, _v, r in MALFORMED)
        # ... and the source's headers, under a prefix: verbatim, `land` would have the record
        # sink land each one again, and `reason` would pass for the sink's own.
        assert {tuple(c) for c in carried} == {
            tuple((SOURCE_HEADER_PREFIX + n, v) for n, v in headers)
        }
    finally:
        await consumer.stop()


async def test_the_same_event_delivered_twice_is_stored_once(settings: Settings) -> None:
    await ensure_topics(settings)
    docs = [event_dict(tenant="acme") for _ in range(20)]
    # Every event sent twice, as an SDK retry would: two messages, one event_id.
    await produce_raw(
        settings, [(b"acme", wire(d)) for d in docs] + [(b"acme", wire(d)) for d in docs]
    )
    with open_store(settings, own=True) as store:
        migrate(store)
        worker = await sink_until(
            settings,
            store,
            lambda w: w.processor.counters.accepted + w.processor.counters.duplicates >= 40,
        )
        assert worker.processor.counters.duplicates == 20
        assert scalar(store, "SELECT count() FROM agentaudit.events") == 20
        assert_chains_valid(store)
    # A new sink on the same store, in a new consumer group (positions come from the store,
    # not from Kafka), recovers the ids and drops a third copy; the same id from another
    # tenant is that tenant's event, stored (ids are remembered within their tenant).
    other = event_dict(tenant="globex") | {"event_id": docs[0]["event_id"]}
    await produce_raw(settings, [(b"acme", wire(docs[0])), (b"globex", wire(other))])
    settings = settings.model_copy(update={"consumer_group": settings.consumer_group + "-b"})
    with open_store(settings, own=True) as store:
        worker = await sink_until(
            settings,
            store,
            # the 20 second copies (after the stored offsets) and the third are re-read
            lambda w: w.processor.counters.duplicates + w.processor.counters.accepted >= 22,
        )
        assert (worker.processor.counters.duplicates, worker.processor.counters.accepted) == (21, 1)
        assert scalar(store, "SELECT count() FROM agentaudit.events") == 21
        assert scalar(store, "SELECT count() FROM agentaudit.events WHERE tenant_id = 'globex'")
