"""Dead letters at the processor: oversized messages keep a prefix, their size and hash; a
future `occurred_at` is judged against the record's timestamp; `shrink` always fits."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import orjson

from agentaudit.sink.deadletter import KEEP_BYTES, STUB_BYTES, WHOLE_BYTES, keep, shrink
from agentaudit.sink.processor import SinkProcessor
from agentaudit.sink.rows import DEAD_LETTER_COLUMNS, Source
from agentaudit_schemas.events import MAX_EVENT_BYTES
from agentaudit_schemas.pricing import load_pricing
from tests.factories import event_dict

FIXED = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
FIXED_MS = int(FIXED.timestamp() * 1000)


def _processor(skew_s: float = 900.0) -> SinkProcessor:
    return SinkProcessor(load_pricing(), 1000, clock=lambda: FIXED, max_clock_skew_s=skew_s)


def _event(at: datetime) -> bytes:
    doc = event_dict()
    doc["occurred_at"] = at.isoformat()
    return orjson.dumps(doc)


def test_oversized_message_keeps_a_prefix_its_size_and_hash() -> None:
    big = b'{"pad": "' + b"x" * (10 << 20) + b'"}'
    p = _processor()
    p.add(Source("events", 0, 7, FIXED_MS, b"acme"), big)
    batch = p.take()
    row = dict(zip(DEAD_LETTER_COLUMNS, batch.dead_letters[0], strict=True))
    digest = hashlib.sha256(big).hexdigest()
    assert row["reason"] == "oversized" and row["original"] == big[:KEEP_BYTES]
    assert f"original {len(big)} bytes, sha256 {digest}" in row["detail"]
    (record,) = batch.dlq
    headers = dict(record.headers)
    assert record.value == big[:KEEP_BYTES]
    assert headers["original_size"] == str(len(big)).encode()
    assert headers["original_sha256"] == digest.encode()
    assert headers["reason"] == b"oversized" and headers["kept_bytes"] == str(KEEP_BYTES).encode()
    assert row["tenant_id"] == "acme"  # from the key: a 10 MB body is not parsed for hints


def test_rejected_messages_up_to_the_limit_are_kept_whole() -> None:
    value = b'{"x": "' + b"y" * (WHOLE_BYTES - 9) + b'"}'
    assert len(value) == WHOLE_BYTES > MAX_EVENT_BYTES
    kept, headers, note = keep(value)
    assert kept == value and headers == [] and note == ""
    kept, headers, note = keep(value + b" ")
    assert kept == value[:KEEP_BYTES] and dict(headers)["original_size"] == b"%d" % (
        WHOLE_BYTES + 1
    )


def test_shrink_cuts_value_and_key_and_names_the_whole() -> None:
    key, value = b"k" * 5000, b"v" * 5000
    short_key, short_value, headers = shrink(key, value, [("reason", b"r" * 2000)])
    named = dict(headers)
    assert short_key == key[:STUB_BYTES] and short_value == value[:STUB_BYTES]
    assert named["original_size"] == b"5000"
    assert named["original_sha256"] == hashlib.sha256(value).hexdigest().encode()
    assert named["original_key_sha256"] == hashlib.sha256(key).hexdigest().encode()
    assert len(named["reason"]) == 256
    # Already described by `keep`: the original's size and hash stay.
    _, prefix_headers, _ = keep(b"z" * (WHOLE_BYTES + 1))
    _, _, again = shrink(None, b"z" * KEEP_BYTES, [("reason", b"oversized"), *prefix_headers])
    assert dict(again)["original_size"] == str(WHOLE_BYTES + 1).encode()
    assert dict(again)["kept_bytes"] == str(STUB_BYTES).encode()


def test_occurred_at_is_judged_against_the_record_timestamp() -> None:
    p = _processor(skew_s=900)
    p.add(Source("events", 0, 0, FIXED_MS, b"acme"), _event(FIXED + timedelta(seconds=900)))
    p.add(Source("events", 0, 1, FIXED_MS, b"acme"), _event(FIXED + timedelta(seconds=901)))
    p.add(Source("events", 0, 2, FIXED_MS, b"acme"), _event(FIXED - timedelta(days=3650)))
    # No timestamp (-1) or an unset one (0): nothing to judge by.
    p.add(Source("events", 0, 3, -1, b"acme"), _event(FIXED + timedelta(days=30)))
    p.add(Source("events", 0, 4, 0, b"acme"), _event(FIXED + timedelta(days=30)))
    batch = p.take()
    assert len(batch.events) == 4
    (row,) = [dict(zip(DEAD_LETTER_COLUMNS, r, strict=True)) for r in batch.dead_letters]
    assert row["reason"] == "occurred_at_in_future" and row["kafka_offset"] == 1
    assert p.counters.accepted == 4 and p.counters.dead_lettered == 1


def test_the_skew_is_configurable() -> None:
    p = _processor(skew_s=0)
    p.add(Source("events", 0, 0, FIXED_MS, b"acme"), _event(FIXED + timedelta(milliseconds=1)))
    p.add(Source("events", 0, 1, FIXED_MS, b"acme"), _event(FIXED))
    assert p.counters.dead_lettered == 1 and p.counters.accepted == 1
