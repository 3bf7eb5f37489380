"""The event contract at the sink's door, against the real broker and chDB: messages of 1.5 MB
and 10 MB, integers beyond 64 bits, NaN, duplicate keys, out-of-range and future `occurred_at`
are dead letters with their own reason (the DLQ topic keeps what fits), and the valid events
behind them all land."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from agentaudit.broker import ensure_topics
from agentaudit.settings import Settings
from agentaudit.sink.deadletter import KEEP_BYTES
from agentaudit.store import open_store
from agentaudit.store.migrations import migrate
from tests.factories import event_dict, wire
from tests.integration.helpers import assert_chains_valid, scalar, sink_until

pytestmark = pytest.mark.integration


def _raw(doc: dict[str, object]) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()  # orjson refuses ints beyond 64 bits


def _poison() -> list[tuple[bytes, bytes, str]]:
    """(key, value, expected reason) of messages no valid trail may hold."""
    big = b'{"pad":"' + b"x" * 1_500_000 + b'"}'
    huge = b'{"pad":"' + b"y" * 10_000_000 + b'"}'
    dup = wire(event_dict(tenant="acme"))
    future = event_dict(tenant="acme")
    future["occurred_at"] = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    return [
        (b"acme", big, "oversized"),
        (b"acme", huge, "oversized"),
        (
            b"acme",
            _raw(event_dict(tenant="acme") | {"attributes": {"n": 2**64}}),
            "schema_violation",
        ),
        (
            b"acme",
            _raw(event_dict(tenant="acme") | {"attributes": {"n": -(2**63) - 1}}),
            "schema_violation",
        ),
        (
            b"acme",
            wire(event_dict(tenant="acme")).replace(b'"latency_ms":3.5', b'"latency_ms":NaN'),
            "invalid_json",
        ),
        (b"acme", dup[:-1] + b',"tenant_id":"globex"}', "duplicate_key"),
        (
            b"acme",
            _raw(event_dict(tenant="acme") | {"occurred_at": "0001-01-01T00:00:00Z"}),
            "schema_violation",
        ),
        (
            b"acme",
            _raw(event_dict(tenant="acme") | {"occurred_at": "9999-12-31T23:59:59-01:00"}),
            "schema_violation",
        ),
        (b"acme", wire(future), "occurred_at_in_future"),
        # A 1.5 MB key: the DLQ record (key kept) is refused, then sent cut down.
        (b"k" * 1_500_000, b"{oops", "invalid_json"),
    ]


async def _produce(
    settings: Settings, messages: list[tuple[bytes, bytes]], timestamp_ms: int | None = None
) -> None:
    # A producer that can write what the broker accepts (10 MB), unlike the SDK's.
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, max_request_size=16 << 20
    )
    await producer.start()
    try:
        for key, value in messages:
            await producer.send(
                settings.events_topic, value, key=key, partition=0, timestamp_ms=timestamp_ms
            )
        await producer.flush()
    finally:
        await producer.stop()


async def _dlq(settings: Settings, n: int) -> list[tuple[bytes, bytes, dict[str, bytes]]]:
    consumer = AIOKafkaConsumer(
        settings.dlq_topic,
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
    )
    await consumer.start()
    try:
        got: list[tuple[bytes, bytes, dict[str, bytes]]] = []
        while len(got) < n:
            records = await consumer.getmany(timeout_ms=5000)
            assert records, f"dead-letter topic has {len(got)} of {n} messages"
            got += [
                (m.key or b"", m.value or b"", dict(m.headers)) for b in records.values() for m in b
            ]
        return got
    finally:
        await consumer.stop()


async def test_poison_becomes_dead_letters_and_the_valid_events_behind_it_land(
    settings: Settings,
) -> None:
    await ensure_topics(settings)
    poison = _poison()
    valid = [event_dict(tenant=f"t-{i % 3}") for i in range(30)]
    # Poison first, on the partition the valid events share: nothing behind it may stall.
    await _produce(
        settings,
        [(k, v) for k, v, _ in poison] + [(d["tenant_id"].encode(), wire(d)) for d in valid],
    )
    total = len(poison) + len(valid)
    with open_store(settings, own=True) as store:
        migrate(store)
        worker = await sink_until(
            settings,
            store,
            lambda w: w.processor.counters.accepted + w.processor.counters.dead_lettered >= total,
        )
        counters = worker.processor.counters
        assert (counters.accepted, counters.dead_lettered, counters.dlq_unsent) == (
            len(valid),
            len(poison),
            0,
        )
        assert scalar(store, "SELECT count() FROM agentaudit.events") == len(valid)
        assert assert_chains_valid(store) == len(valid)
        rows = store.query(
            "SELECT kafka_offset, reason, detail, length(original), original FROM "
            "agentaudit.dead_letters "
            "ORDER BY kafka_offset"
        ).result_rows
        assert [r[1] for r in rows] == [reason for _k, _v, reason in poison]
        for (_offset, _reason, detail, length, original), (_k, value, _r) in zip(
            rows, poison, strict=True
        ):
            original = original if isinstance(original, bytes) else original.encode()
            if len(value) > 1_000_000:
                assert length == KEEP_BYTES and original == value[:KEEP_BYTES]
                assert (
                    f"original {len(value)} bytes, sha256 {hashlib.sha256(value).hexdigest()}"
                    in detail
                )
            else:
                assert original == value
        assert "tenant_id" in rows[5][2] and "occurred_at" in rows[6][2]

    dlq = await _dlq(settings, len(poison))
    assert sorted(h["reason"].decode() for _k, _v, h in dlq) == sorted(r for _k, _v, r in poison)
    oversized = [(v, h) for _k, v, h in dlq if h["reason"] == b"oversized"]
    assert sorted(int(h["original_size"]) for _v, h in oversized) == [
        1_500_000 + 10,
        10_000_000 + 10,
    ]
    for value, headers in oversized:
        assert len(value) == KEEP_BYTES and headers["kept_bytes"] == str(KEEP_BYTES).encode()
        whole = next(v for _k, v, _r in poison if len(v) == int(headers["original_size"]))
        assert headers["original_sha256"] == hashlib.sha256(whole).hexdigest().encode()
    (key, value, headers) = next((k, v, h) for k, v, h in dlq if "original_key_sha256" in h)
    assert value == b"{oops" and key == b"k" * 1024 and headers["reason"] == b"invalid_json"
    assert headers["original_key_sha256"] == hashlib.sha256(b"k" * 1_500_000).hexdigest().encode()


async def test_batches_from_producers_with_every_kafka_codec_land(settings: Settings) -> None:
    """Other producers compress (Java's and librdkafka's `compression.type`): a batch in
    gzip, snappy, lz4 or zstd is read like an uncompressed one, each event stored once."""
    await ensure_topics(settings)
    codecs = [None, "gzip", "snappy", "lz4", "zstd"]
    for codec in codecs:
        producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap, compression_type=codec, linger_ms=50
        )
        await producer.start()
        try:
            for _ in range(20):  # one batch per codec: linger lets them share it
                await producer.send(
                    settings.events_topic, wire(event_dict(tenant="acme")), key=b"acme"
                )
            await producer.flush()
        finally:
            await producer.stop()
    total = 20 * len(codecs)
    with open_store(settings, own=True) as store:
        migrate(store)
        worker = await sink_until(settings, store, lambda w: w.processor.counters.accepted >= total)
        assert worker.processor.counters.dead_lettered == 0
        assert scalar(store, "SELECT count() FROM agentaudit.events") == total
        assert scalar(store, "SELECT uniqExact(event_id) FROM agentaudit.events") == total
        assert_chains_valid(store)


async def test_a_kafka_timestamp_past_any_date_neither_stops_the_sink_nor_fools_its_restart(
    settings: Settings,
) -> None:
    # The producer sets the record's timestamp and the broker takes any int64. Building the
    # dead letter's row raised on it: the sink stopped on that message after every restart.
    # Its stored timestamp is a clamp, so a restart must not compare it with the record's (the
    # log would look replaced and be stored again).
    await ensure_topics(settings)
    valid = [event_dict(tenant="acme") for _ in range(3)]
    await _produce(settings, [(b"acme", wire(d)) for d in valid])
    await _produce(settings, [(b"acme", b"{far future")], 10**16)  # the partition's last one
    with open_store(settings, own=True) as store:
        migrate(store)
        worker = await sink_until(
            settings, store, lambda w: w.processor.counters.dead_lettered == 1
        )
        assert worker.processor.counters.accepted == 3
        detail = scalar(store, "SELECT detail FROM agentaudit.dead_letters")
        assert "kafka timestamp 10000000000000000 ms out of range" in str(detail)

        late = event_dict(tenant="acme")
        await _produce(settings, [(b"acme", wire(late))])
        # A new group: it starts where the store says (the recovery under test), without
        # waiting out the old member's rebalance.
        restarted = settings.model_copy(update={"consumer_group": f"{settings.consumer_group}-2"})
        again = await sink_until(restarted, store, lambda w: w.processor.counters.accepted == 1)
        assert again.processor.counters.dead_lettered == 0  # not stored again
        assert scalar(store, "SELECT count() FROM agentaudit.dead_letters") == 1
        assert scalar(store, "SELECT count() FROM agentaudit.events") == 4
        assert assert_chains_valid(store) == 4
