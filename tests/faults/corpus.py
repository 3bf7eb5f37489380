"""A malformed-input corpus of our own: each case is one Kafka message and its expected
outcome, `stored` or a dead letter with one of the named reasons (`agentaudit.sink.decode.Reason`).

Expectations follow the published contract (`schemas/`, README "Event contract"): numbers in
attributes are signed 64-bit, `occurred_at` is 2000–2199 with an explicit offset and at most
the allowed skew after the Kafka record's timestamp, JSON objects have unique keys. A
case with two acceptable outcomes says why.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from tests.factories import event_dict
from tests.unit.schemas.examples import event

TENANT = "poison"
STORED = "stored"
_HOLE = "@@hole@@"


@dataclass(frozen=True)
class Case:
    name: str
    group: str
    value: bytes | None
    expect: frozenset[str]
    key: bytes | None = TENANT.encode()
    timestamp_ms: int | None = None
    big: bool = False  # over 1 MiB: only in the full corpus and the big-message sample

    @property
    def valid(self) -> bool:
        return STORED in self.expect


def _doc(kind: str = "tool_call", **changes: Any) -> dict[str, Any]:
    doc = event_dict(tenant=TENANT, kind=kind)
    doc.update(changes)
    return doc


def _raw(doc: dict[str, Any], token: bytes) -> bytes:
    """The document with the string `_HOLE` replaced by a raw JSON token (NaN, 1e400, …)."""
    out = orjson.dumps(doc)
    assert _HOLE.encode() in out
    return out.replace(b'"' + _HOLE.encode() + b'"', token)


def _example(kind: str, **payload: Any) -> dict[str, Any]:
    """A valid event of any type (`examples.event`) with its own id, now, in this corpus'
    tenant, and `payload`'s fields changed."""
    doc = event(kind, tenant_id=TENANT, event_id=_doc()["event_id"])
    doc["occurred_at"] = _doc()["occurred_at"]
    doc["payload"].update(payload)
    return doc


def _with(path: str, value: Any, kind: str = "tool_call") -> dict[str, Any]:
    doc = _doc(kind)
    target = doc
    *parents, last = path.split(".")
    for p in parents:
        target = target.setdefault(p, {})
    target[last] = value
    return doc


def _without(path: str) -> dict[str, Any]:
    doc = _doc()
    target = doc
    *parents, last = path.split(".")
    for p in parents:
        target = target[p]
    del target[last]
    return doc


def _dup(field: bytes, extra: bytes) -> bytes:
    """Valid bytes with `extra` (a `"key": value` pair) inserted right after `field`'s opening."""
    out = orjson.dumps(_doc(attributes={"team": "a"}))
    i = out.index(field) + len(field)
    return out[:i] + extra + b"," + out[i:]


def _padded(size: int) -> bytes:
    """A valid event padded with insignificant whitespace to exactly `size` bytes."""
    body = orjson.dumps(_doc())
    return body[:-1] + b" " * (size - len(body)) + b"}"


def _deep(opening: bytes, closing: bytes, depth: int) -> bytes:
    return opening * depth + closing * depth


def _nested_objects(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


def cases() -> list[Case]:
    s, sv, ij = frozenset([STORED]), frozenset(["schema_violation"]), frozenset(["invalid_json"])
    now_ms = int(time.time() * 1000)
    out: list[Case] = []

    def add(
        group: str, name: str, value: bytes | None, expect: frozenset[str] | str, **kw: Any
    ) -> None:
        out.append(
            Case(
                name, group, value, frozenset([expect]) if isinstance(expect, str) else expect, **kw
            )
        )

    def attr(value: Any) -> bytes:
        return orjson.dumps(_doc(attributes={"v": value}))

    def ok() -> bytes:  # a fresh event_id each time: the sink drops repeated ids as re-sends
        return orjson.dumps(_doc())

    # encodings
    add("enc", "latin1_byte_in_string", ok().replace(b'"1.0.0"', b'"1.0.0\xe9"'), ij)
    add("enc", "truncated_utf8_sequence", ok().replace(b'"1.0.0"', b'"1.0.0\xc3("'), ij)
    add("enc", "overlong_utf8_slash", ok().replace(b'"1.0.0"', b'"1.0.0\xc0\xaf"'), ij)
    add("enc", "utf8_encoded_surrogate_cesu", ok().replace(b'"1.0.0"', b'"1.0.0\xed\xa0\x80"'), ij)
    add("enc", "utf8_bom_prefix", b"\xef\xbb\xbf" + ok(), ij)
    add("enc", "utf16_le", ok().decode().encode("utf-16-le"), ij)
    add("enc", "utf16_be_with_bom", ok().decode().encode("utf-16"), ij)
    add("enc", "utf32", ok().decode().encode("utf-32"), ij)
    # A lone surrogate is valid JSON text but not Unicode: it cannot be written as UTF-8
    # canonical bytes, so it can never be chained.
    add(
        "enc",
        "lone_high_surrogate_escape",
        ok().replace(b'"1.0.0"', b'"1.0.0\\ud800"'),
        frozenset(["unencodable", "schema_violation", "invalid_json"]),
    )
    add(
        "enc",
        "lone_low_surrogate_escape_in_attribute",
        attr(_HOLE).replace(b'"' + _HOLE.encode() + b'"', b'"\\udc00x"'),
        frozenset(["unencodable", "schema_violation", "invalid_json"]),
    )
    add("enc", "surrogate_pair_escape_emoji", ok().replace(b'"1.0.0"', b'"1.0.0\\ud83d\\ude00"'), s)
    add("enc", "raw_nul_in_string", ok().replace(b'"1.0.0"', b'"1.0\x000"'), ij)
    add("enc", "escaped_nul_in_label", orjson.dumps(_with("payload.action", "look\u0000up")), s)
    add("enc", "nul_after_document", ok() + b"\x00", ij)
    add("enc", "raw_control_char_in_string", ok().replace(b'"1.0.0"', b'"1.0\x07.0"'), ij)
    add("enc", "multibyte_utf8_text", orjson.dumps(_with("payload.action", "検索 🔍 ñ")), s)
    add("enc", "escaped_solidus_and_unicode", ok().replace(b'"1.0.0"', b'"1\\/0\\u002e0"'), s)
    add("enc", "trailing_newline", ok() + b"\r\n", s)
    # sizes
    add("size", "empty_value", b"", ij)
    add("size", "whitespace_only", b" \n\t ", ij)
    add("size", "padded_just_under_256kib", _padded(256 * 1024), s)
    add("size", "padded_256kib_plus_one", _padded(256 * 1024 + 1), "oversized")
    add("size", "one_mib_plus_one", _padded((1 << 20) + 1), "oversized", big=True)
    add("size", "one_and_a_half_mb", _padded(1_500_000), "oversized", big=True)
    add("size", "ten_mb", _padded(10_000_000), "oversized", big=True)
    add("size", "attribute_value_257_chars", attr("x" * 257), sv)
    add("size", "attribute_key_65_chars", orjson.dumps(_doc(attributes={"k" * 65: 1})), sv)
    add("size", "33_attributes", orjson.dumps(_doc(attributes={f"a{i}": i for i in range(33)})), sv)
    add(
        "size",
        "prompt_over_32k_chars",
        orjson.dumps(_with("payload.content", {"prompt": "p" * 32_769}, "llm_call")),
        sv,
    )
    # nesting
    add("nest", "deep_array_top_level_100k", _deep(b"[", b"]", 100_000), ij)
    add("nest", "deep_object_top_level_20k", _nested_objects(20_000), ij)
    add(
        "nest",
        "deep_array_in_attribute_5k",
        _raw(_doc(attributes={"v": _HOLE}), _deep(b"[", b"]", 5_000)),
        frozenset(["invalid_json", "schema_violation"]),
    )
    add("nest", "object_as_attribute_value", attr({"a": {"b": 1}}), sv)
    add("nest", "array_as_attribute_value", attr([1, 2]), sv)
    add(
        "nest",
        "deep_object_in_unknown_field",
        _raw(_doc(extra=_HOLE), _nested_objects(1_000)),
        frozenset(["invalid_json", "schema_violation"]),
    )
    # numbers (attributes are signed 64-bit; token counts are bounded ints)
    add("num", "int64_max_attribute", attr(2**63 - 1), s)
    add("num", "int64_min_attribute", attr(-(2**63)), s)
    add("num", "two_pow_64_attribute", _raw(_doc(attributes={"v": _HOLE}), str(2**64).encode()), sv)
    add("num", "two_pow_63_attribute", _raw(_doc(attributes={"v": _HOLE}), str(2**63).encode()), sv)
    add(
        "num",
        "below_int64_min_attribute",
        _raw(_doc(attributes={"v": _HOLE}), str(-(2**63) - 1).encode()),
        sv,
    )
    add(
        "num",
        "ten_pow_400_int_attribute",
        _raw(_doc(attributes={"v": _HOLE}), b"1" + b"0" * 400),
        sv,
    )
    add(
        "num",
        "five_thousand_digit_int",
        _raw(_doc(attributes={"v": _HOLE}), b"9" * 5_000),
        frozenset(["schema_violation", "invalid_json"]),
    )
    add(
        "num",
        "float_1e400_latency",
        _raw(_with("payload.latency_ms", _HOLE), b"1e400"),
        frozenset(["schema_violation", "invalid_json"]),
    )
    add("num", "nan_latency", _raw(_with("payload.latency_ms", _HOLE), b"NaN"), ij)
    add("num", "infinity_latency", _raw(_with("payload.latency_ms", _HOLE), b"Infinity"), ij)
    add("num", "minus_infinity_attribute", _raw(_doc(attributes={"v": _HOLE}), b"-Infinity"), ij)
    add("num", "nan_in_string_is_text", attr("NaN"), s)
    add(
        "num",
        "minus_zero_int_tokens",
        _raw(_with("payload.usage.output_tokens", _HOLE, "llm_call"), b"-0"),
        s,
    )
    add("num", "minus_zero_float_latency", _raw(_with("payload.latency_ms", _HOLE), b"-0.0"), s)
    add(
        "num",
        "float_in_int_field",
        orjson.dumps(_with("payload.usage.input_tokens", 1000.0, "llm_call")),
        sv,
    )
    add(
        "num",
        "fraction_in_int_field",
        orjson.dumps(_with("payload.usage.input_tokens", 1.5, "llm_call")),
        sv,
    )
    add(
        "num",
        "exponent_in_int_field",
        _raw(_with("payload.usage.input_tokens", _HOLE, "llm_call"), b"1e3"),
        sv,
    )
    add(
        "num",
        "bool_in_int_field",
        orjson.dumps(_with("payload.usage.input_tokens", True, "llm_call")),
        sv,
    )
    add(
        "num",
        "string_in_int_field",
        orjson.dumps(_with("payload.usage.input_tokens", "1000", "llm_call")),
        sv,
    )
    add(
        "num",
        "negative_tokens",
        orjson.dumps(_with("payload.usage.input_tokens", -1, "llm_call")),
        sv,
    )
    add("num", "int_in_float_field", orjson.dumps(_with("payload.latency_ms", 3)), s)
    add(
        "num",
        "float_max_latency",
        orjson.dumps(_with("payload.latency_ms", 1.7976931348623157e308)),
        sv,
    )
    add("num", "float_attribute_1e300", attr(1e300), sv)
    add("num", "schema_version_as_string", orjson.dumps(_doc(schema_version="1")), sv)
    add("num", "schema_version_2", orjson.dumps(_doc(schema_version=2)), sv)
    # times (2000–2199, an explicit offset, at most the allowed skew after the record's timestamp)
    add("time", "year_1", orjson.dumps(_doc(occurred_at="0001-01-01T00:00:00Z")), sv)
    add("time", "year_9999", orjson.dumps(_doc(occurred_at="9999-12-31T23:59:59.999999Z")), sv)
    add("time", "year_1999", orjson.dumps(_doc(occurred_at="1999-12-31T23:59:59Z")), sv)
    add("time", "year_2000_backfill", orjson.dumps(_doc(occurred_at="2000-01-01T00:00:00Z")), s)
    add("time", "no_timezone", orjson.dumps(_doc(occurred_at="2026-11-21T10:00:00")), sv)
    add("time", "date_only", orjson.dumps(_doc(occurred_at="2026-11-21")), sv)
    add("time", "unix_seconds_number", orjson.dumps(_doc(occurred_at=1_700_000_000)), sv)
    add("time", "leap_second", orjson.dumps(_doc(occurred_at="2016-12-31T23:59:60Z")), sv)
    add("time", "february_30", orjson.dumps(_doc(occurred_at="2026-02-30T10:00:00Z")), sv)
    add("time", "plus_0530_offset", orjson.dumps(_doc(occurred_at="2026-01-02T10:00:00+05:30")), s)
    add(
        "time",
        "far_future_vs_record",
        orjson.dumps(_doc(occurred_at="2150-01-01T00:00:00Z")),
        "occurred_at_in_future",
    )
    add(
        "time",
        "one_hour_ahead_of_record",
        orjson.dumps(_doc()),
        "occurred_at_in_future",
        timestamp_ms=now_ms - 3_600_000,
    )
    add(
        "time",
        "old_record_timestamp_old_event",
        orjson.dumps(_doc(occurred_at="2001-05-05T00:00:00Z")),
        s,
        timestamp_ms=989_024_400_000,
    )  # an hour later
    # ids
    add("id", "event_id_not_uuid", orjson.dumps(_doc(event_id="not-a-uuid")), sv)
    add(
        "id",
        "event_id_uuid4",
        orjson.dumps(_doc(event_id="0b9e4c4e-3f0e-4a7c-9d2e-6c1f5b7a8e90")),
        sv,
    )
    add("id", "event_id_uppercase_v7", orjson.dumps(_doc(event_id=_doc()["event_id"].upper())), sv)
    add(
        "id",
        "event_id_no_hyphens",
        orjson.dumps(_doc(event_id=_doc()["event_id"].replace("-", ""))),
        sv,
    )
    add("id", "event_id_braced", orjson.dumps(_doc(event_id="{" + _doc()["event_id"] + "}")), sv)
    add(
        "id",
        "event_id_nil",
        orjson.dumps(_doc(event_id="00000000-0000-0000-0000-000000000000")),
        sv,
    )
    add("id", "event_id_empty", orjson.dumps(_doc(event_id="")), sv)
    add("id", "event_id_number", orjson.dumps(_doc(event_id=7)), sv)
    add("id", "trace_id_31_hex", orjson.dumps(_doc(trace_id="a" * 31)), sv)
    add("id", "trace_id_33_hex", orjson.dumps(_doc(trace_id="a" * 33)), sv)
    add("id", "span_id_uppercase", orjson.dumps(_doc(span_id="CD" * 8)), sv)
    add("id", "tenant_uppercase", orjson.dumps(_doc(tenant_id="Poison")), "invalid_tenant")
    add("id", "tenant_empty", orjson.dumps(_doc(tenant_id="")), "invalid_tenant")
    add("id", "tenant_64_chars", orjson.dumps(_doc(tenant_id="p" * 64)), "invalid_tenant")
    add("id", "tenant_null", orjson.dumps(_doc(tenant_id=None)), "invalid_tenant")
    add("id", "tenant_missing", orjson.dumps(_without("tenant_id")), "missing_tenant")
    # keys: duplicates in the body are rejected; Kafka keys never decide the tenant
    dk = frozenset(["duplicate_key"])
    add("key", "duplicate_tenant_id_top", _dup(b"{", b'"tenant_id":"victim"'), dk)
    add(
        "key",
        "duplicate_event_id_top",
        _dup(b"{", b'"event_id":"' + _doc()["event_id"].encode() + b'"'),
        dk,
    )
    add("key", "duplicate_key_in_payload", _dup(b'"payload":{', b'"tool":"other_tool"'), dk)
    add("key", "duplicate_key_in_attributes", _dup(b'"attributes":{', b'"team":"b"'), dk)
    add("key", "duplicate_key_in_sdk", _dup(b'"sdk":{', b'"name":"evil"'), dk)
    add("key", "same_value_twice", _dup(b"{", b'"tenant_id":"poison"'), dk)
    add("key", "null_kafka_key", ok(), s, key=None)
    add("key", "binary_kafka_key", orjson.dumps(_doc()), s, key=b"\xff\x00\xfe")
    add("key", "empty_kafka_key", orjson.dumps(_doc()), s, key=b"")
    add("key", "key_names_other_tenant", orjson.dumps(_doc()), s, key=b"steady-0")
    add("key", "tombstone", None, ij)
    add("key", "tombstone_empty_key", None, ij, key=b"")  # (no client sends null key and value)
    # types
    add("type", "top_level_array", b"[" + ok() + b"]", ij)
    add("type", "top_level_string", b'"hello"', ij)
    add("type", "top_level_number", b"42", ij)
    add("type", "top_level_null", b"null", ij)
    add("type", "top_level_true", b"true", ij)
    add("type", "unknown_type", orjson.dumps(_doc(type="llm_call_v2")), "unknown_type")
    add("type", "type_missing", orjson.dumps(_without("type")), "unknown_type")
    add("type", "type_null", orjson.dumps(_doc(type=None)), "unknown_type")
    add("type", "type_number", orjson.dumps(_doc(type=3)), "unknown_type")
    add("type", "payload_missing", orjson.dumps(_without("payload")), sv)
    add("type", "payload_field_missing", orjson.dumps(_without("payload.tool")), sv)
    add("type", "payload_is_array", orjson.dumps(_doc(payload=[1])), sv)
    add(
        "type", "payload_of_other_type", orjson.dumps(_doc(payload=_doc("llm_call")["payload"])), sv
    )
    add("type", "extra_top_level_field", orjson.dumps(_doc(extra=1)), sv)
    add("type", "extra_payload_field", orjson.dumps(_with("payload.extra", 1)), sv)
    add("type", "sdk_missing", orjson.dumps(_without("sdk")), sv)
    add("type", "json_with_comment", ok()[:-1] + b"/* c */}", ij)
    add("type", "single_quotes", ok().replace(b'"', b"'"), ij)
    add("type", "trailing_comma", ok()[:-1] + b",}", ij)
    add("type", "two_documents", ok() + ok(), ij)
    add("type", "valid_llm_call", orjson.dumps(_doc("llm_call")), s)
    add(
        "type",
        "valid_unknown_model_priced_zero",
        orjson.dumps(_with("payload.request_model", "no-such-model-9", "llm_call")),
        s,
    )
    out += _added_cases()
    names = [c.name for c in out]
    assert len(names) == len(set(names)), "case names are unique"
    return out


ADDED = (
    "int64_max_as_float_attribute",
    "count_int64_max",
    "count_above_int64",
    "count_two_pow_64",
    "list_count_two_pow_64",
    "unix_seconds_string",
    "unix_millis_string",
    "time_without_seconds",
    "decimal_comma_fraction",
    "offset_without_colon",
    "space_for_t",
    "lowercase_t_and_z",
    "nine_fraction_digits",
    "occurred_at_int_past_64_bits",
)
"""Cases added after `tests/unit/sink/test_hot_path_golden.py` pinned the corpus's digest
(last, so the ids and clocks of the pinned cases stay the same; that test leaves these out)."""


def _added_cases() -> list[Case]:
    s, sv = frozenset([STORED]), frozenset(["schema_violation"])
    out: list[Case] = []

    def add(group: str, name: str, value: bytes, expect: frozenset[str]) -> None:
        out.append(Case(name, group, value, expect))

    # A float literal of INT64_MAX is 2**63 once parsed: outside the range, as 2**63 is.
    add(
        "num",
        "int64_max_as_float_attribute",
        _raw(_doc(attributes={"v": _HOLE}), b"9223372036854775807.0"),
        sv,
    )
    # Counts with no natural bound are signed 64-bit like every number: beyond, the canonical
    # bytes cannot be written (an `unencodable` dead letter of an event the schema called valid).
    big = str(2**64).encode()
    add("num", "count_int64_max", orjson.dumps(_example("auditor_query", read_bytes=2**63 - 1)), s)
    add(
        "num", "count_above_int64", _raw(_example("auditor_query", read_bytes=_HOLE), b"9" * 19), sv
    )
    add("num", "count_two_pow_64", _raw(_example("auditor_query", result_rows=_HOLE), big), sv)
    add(
        "num",
        "list_count_two_pow_64",
        _raw(_example("retention_applied", floors=_HOLE), b"[" + big + b"]"),
        sv,
    )
    # `occurred_at` is RFC 3339's date-time: pydantic's parser took more, and the JSON Schema
    # refused it (a string of unix seconds or ms had its unit guessed).
    for name, stamp, expect in [
        ("unix_seconds_string", "1795255200", sv),
        ("unix_millis_string", "1795255200000", sv),
        ("time_without_seconds", "2026-11-21T10:00Z", sv),
        ("decimal_comma_fraction", "2026-11-21T10:00:00,5Z", sv),
        ("offset_without_colon", "2026-11-21T10:00:00+0100", sv),
        ("space_for_t", "2026-11-21 10:00:00Z", sv),
        ("lowercase_t_and_z", "2026-11-21t10:00:00.5z", s),  # RFC 3339 allows both
        ("nine_fraction_digits", "2026-11-21T10:00:00.123456789Z", s),  # kept to the µs
    ]:
        add("time", name, orjson.dumps(_doc(occurred_at=stamp)), expect)
    add("time", "occurred_at_int_past_64_bits", _raw(_doc(occurred_at=_HOLE), b"9" * 25), sv)
    assert tuple(c.name for c in out) == ADDED
    return out


def sample(all_cases: list[Case], pick: Callable[[int], bool]) -> list[Case]:
    """Every case whose index passes `pick`, plus every case of the groups that crashed or
    stalled the sink before (sizes, numbers, times), without the multi-megabyte ones."""
    return [
        c
        for i, c in enumerate(all_cases)
        if not c.big and (pick(i) or c.group in ("size", "num", "time"))
    ]
