"""The sink's routing decisions, without Kafka or ClickHouse."""

import time
from datetime import UTC, datetime

import orjson

from agentaudit.sink.deadletter import SOURCE_HEADER_PREFIX
from agentaudit.sink.dedup import event_key
from agentaudit.sink.processor import SinkProcessor
from agentaudit.sink.rows import DEAD_LETTER_COLUMNS, INGEST_COLUMNS, Source
from agentaudit_schemas.pricing import load_pricing
from tests.factories import event_dict, wire

FIXED = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def processor() -> SinkProcessor:
    return SinkProcessor(load_pricing(), dedup_capacity=1000, clock=lambda: FIXED)


def src(offset: int, partition: int = 0) -> Source:
    # Recorded when the factories' events happen (now): an earlier record timestamp would
    # make them `occurred_at_in_future` dead letters.
    return Source("events", partition, offset, int(time.time() * 1000), b"acme")


def test_rows_match_columns_and_chain_advances() -> None:
    p = processor()
    p.add(src(0), wire(event_dict(kind="llm_call")))
    p.add(src(1), wire(event_dict()))
    batch = p.take()
    assert len(batch.events) == 2 and all(len(r) == len(INGEST_COLUMNS) for r in batch.events)
    seq = INGEST_COLUMNS.index("chain_seq")
    assert [r[seq] for r in batch.events] == [1, 2]
    cost = batch.events[0][INGEST_COLUMNS.index("cost_usd")]
    assert cost > 0
    assert batch.ranges == {0: (0, 1)}


def test_invalid_goes_to_dead_letters_and_dlq_with_reason() -> None:
    p = processor()
    p.add(src(5), b"{oops")
    batch = p.take()
    assert not batch.events and len(batch.dead_letters) == 1
    row = dict(zip(DEAD_LETTER_COLUMNS, batch.dead_letters[0], strict=True))
    assert (
        row["reason"] == "invalid_json" and row["original"] == b"{oops" and row["kafka_offset"] == 5
    )
    assert dict(batch.dlq[0].headers)["reason"] == b"invalid_json"


def test_resent_event_is_stored_once() -> None:
    p = processor()
    doc = event_dict()
    p.add(src(0), wire(doc))
    p.add(src(1), wire(doc))
    assert len(p.take().events) == 1
    assert p.counters.duplicates == 1


def test_stored_counts_only_what_the_store_acknowledged() -> None:
    p = processor()
    p.add(src(0), wire(event_dict()))
    p.add(src(1), b"{oops")
    dropped = p.take()  # never stored: a fenced sink drops it, a stop with the store down too
    p.add(src(2), wire(event_dict()))
    p.stored(p.take())
    c = p.counters
    assert (c.accepted, c.dead_lettered) == (2, 1) and len(dropped.events) == 1
    assert (c.events_stored, c.dead_letters_stored) == (1, 0)


def test_watermarks_skip_what_the_store_holds_per_table() -> None:
    p = processor()
    p.recover({0: 10}, {0: 3}, {("acme", 0): (7, "e" * 64), ("acme", 1): (40, "f" * 64)}, [])
    assert p.resume_offset(0) == 11 and p.resume_offset(1) == 0
    p.add(src(9), wire(event_dict()))  # stored already
    p.add(src(3), b"junk")  # dead letter stored already
    p.add(src(4), b"junk")  # dead letter not stored yet
    p.add(src(11), wire(event_dict()))
    batch = p.take()
    assert len(batch.dead_letters) == 1 and len(batch.events) == 1
    assert batch.events[0][INGEST_COLUMNS.index("chain_seq")] == 8
    p.stored(batch)
    assert p.event_watermark[0] == 11 and p.dead_letter_watermark[0] == 4


def test_a_kafka_timestamp_past_any_date_is_a_dead_letter_with_a_storable_time() -> None:
    # The producer sets the record's timestamp and the broker takes any int64: building the
    # dead letter's row raised out of `add`, and the sink stopped on that message again after
    # every restart, stalling its partition.
    p = processor()
    for offset, ts in enumerate((10**16, 2**63 - 1, -(10**15))):
        p.add(Source("events", 0, offset, ts, b"acme"), b"{oops")
    rows = [dict(zip(DEAD_LETTER_COLUMNS, r, strict=True)) for r in p.take().dead_letters]
    assert [r["kafka_timestamp"].year for r in rows] == [2299, 2299, 1900]
    assert all("out of range, stored as" in r["detail"] for r in rows)
    assert p.counters.dead_lettered == 3


def test_an_event_id_is_remembered_within_its_tenant() -> None:
    # With the id alone, a producer sending another tenant's event id first (OTLP ids are
    # computable from trace context) made that tenant's event a "duplicate": dropped, in
    # neither table. A re-send by the same tenant is still dropped, after recovery too.
    p = processor()
    mallory, victim = event_dict(tenant="mallory"), event_dict(tenant="victim")
    victim["event_id"] = mallory["event_id"]
    p.add(src(0), wire(mallory))
    p.add(src(1), wire(victim))
    p.add(src(2), wire(victim))  # the victim's SDK re-sends it
    batch = p.take()
    assert [orjson.loads(row[0])["tenant_id"] for row in batch.events] == ["mallory", "victim"]
    assert p.counters.duplicates == 1
    again = processor()
    again.recover({}, {}, {}, [event_key("mallory", mallory["event_id"])])
    again.add(src(3), wire(victim))
    again.add(src(4), wire(mallory))
    assert len(again.take().events) == 1 and again.counters.duplicates == 1


def test_a_reused_event_id_with_other_content_is_a_dead_letter_not_a_duplicate() -> None:
    # Before, the first event with an id won and every later one with that id vanished as a
    # "duplicate" (a producer that reuses ids: produced 3, stored 1, dead letters 0). A
    # re-send is byte-identical; anything else is kept as a dead letter with its bytes.
    p = processor()
    first = event_dict(kind="llm_call")
    other = {**event_dict(kind="tool_call"), "event_id": first["event_id"]}
    p.add(src(0), wire(first))
    p.add(src(1), wire(first))  # a re-send: dropped, counted
    p.add(src(2), wire(other))  # a reused id: kept
    batch = p.take()
    assert len(batch.events) == 1
    assert (p.counters.accepted, p.counters.duplicates, p.counters.dead_lettered) == (1, 1, 1)
    (row,) = [dict(zip(DEAD_LETTER_COLUMNS, r, strict=True)) for r in batch.dead_letters]
    assert row["reason"] == "event_id_conflict" and row["kafka_offset"] == 2
    assert orjson.loads(row["original"])["type"] == "tool_call" and row["tenant_id"] == "acme"
    (dlq,) = batch.dlq
    assert ("reason", b"event_id_conflict") in dlq.headers
    # Ids recovered without a digest (rows stored before migration 0023): a reused id then
    # counts as a re-send (README).
    again = processor()
    again.recover({}, {}, {}, [event_key("acme", first["event_id"])])
    again.add(src(3), wire(other))
    assert (again.counters.duplicates, again.counters.dead_lettered) == (1, 0)


def test_a_dead_letter_keeps_its_records_headers() -> None:
    # Before, key and value were kept and the headers lost (the row and the DLQ record): a
    # dead letter could not be replayed as it came.
    headers = [("traceparent", b"00-ab-01"), ("reason", b"mine"), ("empty", None)]
    p = processor()
    p.add(src(5)._replace(headers=headers), b"{not json")
    batch = p.take()
    row = dict(zip(DEAD_LETTER_COLUMNS, batch.dead_letters[0], strict=True))
    assert row["kafka_headers"] == [
        ("traceparent", b"00-ab-01"),
        ("reason", b"mine"),
        ("empty", b""),
    ]
    (dlq,) = batch.dlq
    assert dlq.headers[-3:] == [(SOURCE_HEADER_PREFIX + n, v or b"") for n, v in headers]
    assert dict(dlq.headers)["reason"] == b"invalid_json"  # the sink's own, not the source's


def test_a_dead_letters_headers_count_toward_the_batch_bytes() -> None:
    # The batch holds them until the flush (row and DLQ record): uncounted, rejected records
    # with a megabyte of headers each grew a batch far past `sink_batch_bytes`.
    p = processor()
    p.add(src(0)._replace(headers=[("h", b"x" * 1_000_000)]), b"{not json")
    assert p.batch.size >= 1_000_000
