"""The record sink's routing and exactly-once decisions, without Kafka or ClickHouse."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from agentaudit.sink.deadletter import LAND, SOURCE_HEADER_PREFIX
from agentaudit.sink.pipeline_records.decode import MAX_RECORD_BYTES
from agentaudit.sink.pipeline_records.routing import (
    DEAD_LETTER_KIND,
    DEAD_LETTERS_TABLE,
    RECORD_DEAD_LETTER_COLUMNS,
    RecordBatch,
    RecordProcessor,
)
from agentaudit.sink.pipeline_records.rows import ALERTS, DRIFT_SCORES, RECORD_TABLES
from agentaudit.sink.rows import Source
from agentaudit_schemas.records import Heartbeat
from tests.unit.sink.pipeline_records.factories import alert, control, drift, transition, wire

FIXED = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def processor() -> RecordProcessor:
    return RecordProcessor(dedup_capacity=1000, clock=lambda: FIXED, control_topic="control")


def src(
    offset: int, topic: str = "alerts", partition: int = 0, key: bytes | None = b"acme"
) -> Source:
    return Source(topic, partition, offset, 1_700_000_000_000, key)


def test_each_record_goes_to_its_table() -> None:
    p = processor()
    for offset, record in enumerate([alert(), transition(), drift()]):
        p.add(src(offset), wire(record))
    p.add(src(0, "control"), wire(control()))
    batch = p.take()
    assert {t: len(rows) for t, rows in batch.rows.items()} == {
        "agentaudit.alerts": 1,
        "agentaudit.breaker_transitions": 1,
        "agentaudit.drift_scores": 1,
        "agentaudit.control": 1,
    }
    assert batch.ranges == {("alerts", 0): (0, 2), ("control", 0): (0, 0)}
    assert p.counters.stored == {
        "alert": 1,
        "breaker_transition": 1,
        "drift_score": 1,
        "control": 1,
    }
    assert batch.offsets_rows() == [("alerts", 0, 2), ("control", 0, 0)]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"{oops", "invalid_json"),
        (b"[1, 2]", "invalid_json"),
        (b'{"hello": "world"}', "unknown_type"),
        (orjson.dumps({**orjson.loads(wire(alert())), "record": "spend_window"}), "unknown_type"),
        (
            orjson.dumps({**orjson.loads(wire(drift())), "tenant_id": "Not A Slug"}),
            "invalid_tenant",
        ),
        (
            orjson.dumps(
                {k: v for k, v in orjson.loads(wire(drift())).items() if k != "tenant_id"}
            ),
            "missing_tenant",
        ),
        (
            orjson.dumps({**orjson.loads(wire(alert())), "scope": {"tenant_id": "bad tenant"}}),
            "invalid_tenant",
        ),
        (
            orjson.dumps({**orjson.loads(wire(alert())), "severity": "apocalyptic"}),
            "schema_violation",
        ),
        (b'{"record": "alert", "pad": "' + b"x" * MAX_RECORD_BYTES + b'"}', "oversized"),
        # valid RFC 3339, but UTC of it is before year 1: the conversion's OverflowError
        # escaped pydantic and stopped the sink, on this message again after every restart
        (
            orjson.dumps({**orjson.loads(wire(alert())), "fired_at": "0001-01-01T00:30:00+01:00"}),
            "schema_violation",
        ),
        (
            orjson.dumps({**orjson.loads(wire(transition())), "at": "9999-12-31T23:30:00-01:00"}),
            "schema_violation",
        ),
    ],
)
def test_junk_is_dead_lettered_with_a_reason_code(value: bytes, reason: str) -> None:
    p = processor()
    p.add(src(7, key=b"tenant=acme/agent=bot"), value)
    batch = p.take()
    assert not batch.rows and len(batch.dead_letters) == 1
    row = dict(zip(RECORD_DEAD_LETTER_COLUMNS, batch.dead_letters[0], strict=True))
    assert (row["reason"], row["original"], row["kafka_offset"], row["source_topic"]) == (
        reason,
        value,
        7,
        "alerts",
    )
    assert row["tenant_id"] in ("acme", "Not A Slug", "bad tenant")
    assert dict(batch.dlq[0].headers)["reason"] == reason.encode()
    assert batch.high == {DEAD_LETTERS_TABLE: {("alerts", 0): 7}}


def test_dead_letter_names_the_record_id_it_carried() -> None:
    doc = {**orjson.loads(wire(alert())), "severity": "apocalyptic"}
    p = processor()
    p.add(src(0), orjson.dumps(doc))
    row = dict(zip(RECORD_DEAD_LETTER_COLUMNS, p.take().dead_letters[0], strict=True))
    assert row["event_id"] == doc["alert_id"] and row["tenant_id"] == "acme"


@pytest.mark.parametrize("value", [None, b""])
def test_tombstones_are_skipped_not_dead_lettered(value: bytes | None) -> None:
    p = processor()
    p.add(src(4, "control"), value)
    batch = p.take()
    assert not batch.rows and not batch.dead_letters and p.counters.tombstones == 1
    assert batch.offsets_rows() == [("control", 0, 4)]  # still a position to resume after


def test_a_republished_record_is_stored_once_even_from_another_partition() -> None:
    p = processor()
    p.add(src(0), wire(alert(1)))
    p.add(src(0, partition=1), wire(alert(1, observed=99.0)))  # a replaying job: same id
    assert len(p.take().rows[ALERTS.table]) == 1 and p.counters.duplicates == 1


def test_recovered_ids_drop_records_stored_before_the_restart() -> None:
    p = processor()
    p.recover({}, {}, {"alert": [alert(1).alert_id], "drift_score": [drift(2).score_id]})
    p.add(src(0), wire(alert(1)))
    p.add(src(1), wire(drift(2)))
    p.add(src(2), wire(drift(3)))
    assert [r[0] for r in p.take().rows[DRIFT_SCORES.table]] == [drift(3).score_id]
    assert p.counters.duplicates == 2


def test_resume_after_the_last_complete_flush() -> None:
    p = processor()
    p.recover({ALERTS.table: {("alerts", 0): 50}}, {("alerts", 0): 40}, {})
    assert p.resume_offset("alerts", 0) == 41
    assert p.resume_offset("alerts", 1) == 0 and p.resume_offset("control", 0) == 0


def _store_state(
    tables: dict[str, list[tuple[Any, ...]]],
) -> tuple[dict[str, dict[tuple[str, int], int]], dict[str, list[str]]]:
    """What `recover_records` would read from a store holding `tables` (no offsets rows)."""
    marks: dict[str, dict[tuple[str, int], int]] = {}
    recent: dict[str, list[str]] = {}
    for spec in RECORD_TABLES.values():
        for row in tables.get(spec.table, []):
            got = dict(zip(spec.columns, row, strict=True))
            tp = (got["kafka_topic"], got["kafka_partition"])
            marks.setdefault(spec.table, {})[tp] = max(
                marks.get(spec.table, {}).get(tp, -1), got["kafka_offset"]
            )
            recent.setdefault(spec.record, []).append(got[spec.id_column])
    return marks, recent


def test_a_crash_between_two_table_inserts_replays_into_exactly_the_missing_rows() -> None:
    """Alerts inserted, drift scores not, offsets row not: a restart stores each record once."""
    messages = [wire(r) for r in (drift(0), alert(0), drift(1), alert(1), transition(0), drift(2))]
    first = processor()
    for offset, value in enumerate(messages):
        first.add(src(offset), value)
    crashed: RecordBatch = first.take()
    store = {ALERTS.table: crashed.rows[ALERTS.table]}  # only the first insert landed

    marks, recent = _store_state(store)
    second = processor()
    second.recover(marks, {}, recent)
    start = second.resume_offset("alerts", 0)
    assert start == 0  # no complete flush recorded: replay the partition
    for offset in range(start, len(messages)):
        second.add(src(offset), messages[offset])
    replay = second.take()
    for table, rows in replay.rows.items():
        store.setdefault(table, []).extend(rows)
    ids = {t: sorted(r[0] for r in rows) for t, rows in store.items()}
    assert ids == {
        ALERTS.table: sorted([alert(0).alert_id, alert(1).alert_id]),
        DRIFT_SCORES.table: sorted([drift(i).score_id for i in range(3)]),
        "agentaudit.breaker_transitions": [transition(0).transition_id],
    }
    assert second.counters.already_stored == 2 and second.counters.duplicates == 0


def test_stored_advances_watermarks_and_positions() -> None:
    p = processor()
    p.add(src(3), wire(alert()))
    p.add(src(4), b"junk")
    p.add(src(9, "control", 2), b"")
    batch = p.take()
    p.stored(batch)
    assert p.watermarks == {
        ALERTS.table: {("alerts", 0): 3},
        DEAD_LETTERS_TABLE: {("alerts", 0): 4},
    }
    assert p.resume_offset("alerts", 0) == 5 and p.resume_offset("control", 2) == 10
    p.add(src(3), wire(alert(5)))  # at or below the alerts watermark: held already
    p.add(src(4), b"junk")
    assert p.counters.already_stored == 2 and not p.take().rows


def test_a_new_log_epoch_forgets_the_partitions_positions_and_drops_stored_ids() -> None:
    """After a log reset the new log's offsets restart below the old watermarks: nothing of
    the partition is skipped by offset any more, records already stored are dropped by id."""
    p = processor()
    p.recover({ALERTS.table: {("alerts", 0): 50, ("alerts", 1): 7}}, {("alerts", 0): 50}, {})
    assert p.new_epoch(("alerts", 0)) == 1
    assert p.resume_offset("alerts", 0) == 0
    p.add(Source("alerts", 0, 3, 1_700_000_000_000, b"acme", 1), wire(alert(1)))
    p.add(Source("alerts", 0, 4, 1_700_000_000_000, b"acme", 1), wire(alert(1)))  # replayed
    p.add(Source("alerts", 1, 7, 1_700_000_000_000, b"acme", 0), wire(alert(2)))  # other part
    batch = p.take()
    (row,) = batch.rows[ALERTS.table]
    assert dict(zip(ALERTS.columns, row, strict=True))["log_epoch"] == 1
    assert (p.counters.duplicates, p.counters.already_stored) == (1, 1)
    assert batch.offsets_table_rows() == [("alerts", 0, 4, 1), ("alerts", 1, 7, 0)]
    assert "alerts:0@1:3-4" in batch.dedup_token(ALERTS.table)


def test_an_oversized_dead_letter_keeps_a_prefix_its_size_and_hash() -> None:
    p = processor()
    big = b'{"record": "alert", "pad": "' + b"x" * (2 * MAX_RECORD_BYTES) + b'"}'
    p.add(src(0), big)
    batch = p.take()
    row = dict(zip(RECORD_DEAD_LETTER_COLUMNS, batch.dead_letters[0], strict=True))
    headers = dict(batch.dlq[0].headers)
    assert len(row["original"]) == len(batch.dlq[0].value) < len(big)
    assert f"original {len(big)} bytes" in row["detail"]
    assert int(headers["original_size"]) == len(big)


def test_a_valid_record_that_cannot_be_stored_is_a_dead_letter_not_a_crash() -> None:
    """An alert whose `details` holds an integer beyond 64 bits passed validation and then
    crashed the row's encoding: the record sink would crash-loop on that message."""
    doc = orjson.loads(wire(alert()))
    del doc["details"]
    raw = orjson.dumps(doc)[:-1] + b',"details":{"n":18446744073709551616}}'
    p = processor()
    p.add(src(3), raw)
    p.add(src(4), wire(alert(tenant="globex")))
    batch = p.take()
    assert [r[RECORD_DEAD_LETTER_COLUMNS.index("reason")] for r in batch.dead_letters] == [
        "unencodable"
    ]
    assert len(batch.rows[ALERTS.table]) == 1


def _landing() -> RecordProcessor:
    return RecordProcessor(dedup_capacity=1000, clock=lambda: FIXED, dlq_topic="dlq")


def test_a_dead_letter_only_the_dlq_topic_holds_lands_in_dead_letters_once() -> None:
    p = _landing()
    headers = [
        ("reason", b"unknown_type"),
        ("detail", b"span 'chat' maps to no event"),
        ("source", b"otlp:/v1/traces"),
        LAND,
    ]
    p.add(src(7, "dlq", key=b"acme"), b'{"item": 1}', headers)
    batch = p.take()
    (row,) = batch.dead_letters
    named = dict(zip(RECORD_DEAD_LETTER_COLUMNS, row, strict=True))
    assert named["source_topic"] == "dlq" and named["kafka_offset"] == 7
    assert named["reason"] == "unknown_type"
    assert named["detail"] == "span 'chat' maps to no event (from otlp:/v1/traces)"
    assert named["tenant_id"] == "acme" and named["original"] == b'{"item": 1}'
    assert batch.high == {DEAD_LETTERS_TABLE: {("dlq", 0): 7}}
    assert p.counters.landed == 1 and p.counters.handled == 0  # not a record
    p.stored(batch)
    # replayed after a crash: the store holds it, nothing is added
    p.add(src(7, "dlq", key=b"acme"), b'{"item": 1}', headers)
    assert p.take().dead_letters == [] and p.counters.landed_before == 1


def test_a_sinks_own_dead_letter_on_the_dlq_topic_is_not_stored_twice() -> None:
    p = _landing()
    p.add(src(0, "dlq"), b"{oops", [("reason", b"invalid_json"), ("source", b"events:0:5")])
    batch = p.take()
    assert batch.dead_letters == [] and batch.dlq == []
    assert batch.ranges == {("dlq", 0): (0, 0)}  # its offset still counts as read
    assert p.counters.not_landed == 1 and p.counters.landed == 0


def test_a_writers_retry_of_a_dead_letter_lands_once_and_is_counted_as_a_copy() -> None:
    """The OTLP exporter re-sends a request the receiver answered 503: its dead letters reach
    the DLQ topic again at new offsets; one row each, the copies counted."""
    p = _landing()
    span = [("reason", b"unknown_type"), ("source", b"otlp:/v1/traces"), LAND]
    alert_refused = [("reason", b"alert_refused"), ("source", b"alerts:0:4"), LAND]
    p.add(src(0, "dlq", key=b"acme"), b'{"item": 1}', span)
    p.add(src(1, "dlq", key=b"acme"), b'{"item": 2}', span)
    p.add(src(2, "dlq", key=b"acme"), b'{"item": 1}', [*span, ("detail", b"other words")])
    # the same alert refused by two receivers: two dead letters, not copies
    p.add(src(3, "dlq", key=b"acme"), b"{}", [*alert_refused, ("receiver", b"a")])
    p.add(src(4, "dlq", key=b"acme"), b"{}", [*alert_refused, ("receiver", b"b")])
    p.add(src(5, "dlq", key=b"acme"), b"{}", [*alert_refused, ("receiver", b"b")])
    batch = p.take()
    ids = [r[RECORD_DEAD_LETTER_COLUMNS.index("dead_letter_id")] for r in batch.dead_letters]
    assert [r[RECORD_DEAD_LETTER_COLUMNS.index("kafka_offset")] for r in batch.dead_letters] == [
        0,
        1,
        3,
        4,
    ]
    assert len(set(ids)) == 4 and all(len(i) == 32 for i in ids)
    assert p.counters.landed == 4 and p.counters.landed_copies == 2
    assert batch.high == {DEAD_LETTERS_TABLE: {("dlq", 0): 4}}  # a copy moves no watermark
    assert batch.ranges == {("dlq", 0): (0, 5)}  # but its offset is read
    # a writer naming the identity: that is the id; after a restart the window comes back
    p.recover({}, {}, {DEAD_LETTER_KIND: ["w-1"]})
    p.add(src(6, "dlq"), b"x", [*span, ("dead_letter_id", b"w-1")])
    p.add(src(7, "dlq"), b"y", [*span, ("dead_letter_id", b"w-2")])
    assert [r[-1] for r in p.take().dead_letters] == ["w-2"]
    assert p.counters.landed_copies == 3


def test_the_sinks_own_dead_letters_carry_no_landed_identity() -> None:
    p = processor()
    p.add(src(7), b"{oops")
    (row,) = p.take().dead_letters
    assert row[RECORD_DEAD_LETTER_COLUMNS.index("dead_letter_id")] == ""


@pytest.mark.parametrize("field", ["current_n", "reference_n"])
def test_a_count_past_uint64_is_a_dead_letter_not_a_batch_the_store_refuses(field: str) -> None:
    p = processor()
    p.add(src(3), wire(drift(5).model_copy(update={field: 2**64})))
    p.add(src(4), wire(drift(6).model_copy(update={field: 2**64 - 1})))  # the largest UInt64
    batch = p.take()
    (row,) = batch.dead_letters
    named = dict(zip(RECORD_DEAD_LETTER_COLUMNS, row, strict=True))
    assert named["reason"] == "unencodable" and f"{field} = {2**64}" in named["detail"]
    assert len(batch.rows[DRIFT_SCORES.table]) == 1


def test_a_landed_dead_letter_with_null_header_values_lands_not_a_crash() -> None:
    """Kafka headers may have null values (the broker passes them, aiokafka gives None): one
    such `LAND` message made `add` raise, and the sink stopped on it after every restart."""
    p = _landing()
    nulls: list[tuple[str, bytes | None]] = [
        LAND,
        ("reason", None),
        ("detail", None),
        ("source", None),
        ("dead_letter_id", None),
    ]
    p.add(src(0, "dlq", key=b"acme"), b"{}", nulls)
    (row,) = p.take().dead_letters
    named = dict(zip(RECORD_DEAD_LETTER_COLUMNS, row, strict=True))
    assert (named["reason"], named["detail"], named["original"]) == ("unknown", "", b"{}")
    assert len(named["dead_letter_id"]) == 32


def test_a_heartbeat_seq_past_uint64_is_a_dead_letter() -> None:
    beat = Heartbeat.make("stream_jobs", FIXED, 0, "host:1", 5.0).model_copy(update={"seq": 2**64})
    p = processor()
    p.add(src(3, "control", key=b"heartbeat/stream_jobs"), wire(beat))
    (row,) = p.take().dead_letters
    assert row[RECORD_DEAD_LETTER_COLUMNS.index("reason")] == "unencodable"


def test_a_dead_letter_keeps_its_records_headers() -> None:
    # Before, key and value were kept and the headers lost: a dead letter could not be
    # replayed as it came. On the DLQ topic they go under a prefix: a verbatim `land` would
    # have this very sink land the dead letter a second time.
    headers = [("traceparent", b"00-ab-01"), ("land", b"dead_letters"), ("empty", None)]
    p = processor()
    source = src(3)._replace(headers=headers)
    p.add(source, b"not json", headers)
    batch = p.take()
    row = dict(zip(RECORD_DEAD_LETTER_COLUMNS, batch.dead_letters[0], strict=True))
    assert row["kafka_headers"] == [
        ("traceparent", b"00-ab-01"),
        ("land", b"dead_letters"),
        ("empty", b""),
    ]
    carried = [(n, v) for n, v in batch.dlq[0].headers if n.startswith(SOURCE_HEADER_PREFIX)]
    assert carried == [(SOURCE_HEADER_PREFIX + n, v or b"") for n, v in headers]
    assert dict(batch.dlq[0].headers).get(LAND[0]) is None
