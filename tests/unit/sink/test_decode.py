import json
from typing import Any

import pytest

import agentaudit.sink.decode as decode_module
from agentaudit.demo.malformed import MALFORMED
from agentaudit.sink.decode import Accepted, Reason, Rejected, decode
from agentaudit_schemas.envelope import INT64_MAX, INT64_MIN
from agentaudit_schemas.events import MAX_EVENT_BYTES
from tests.factories import event_dict, wire


def test_valid_event_is_accepted_with_canonical_bytes() -> None:
    verdict = decode(wire(event_dict()))
    assert isinstance(verdict, Accepted)
    assert verdict.canonical.startswith(b'{"agent_id":"support-bot"')


def test_every_malformed_sample_gets_its_reason() -> None:
    for _key, value, expected in MALFORMED:
        verdict = decode(value)
        assert isinstance(verdict, Rejected), value[:60]
        assert verdict.reason.value == expected, (value[:80], verdict)
        assert verdict.detail


def test_tombstone_is_rejected_not_raised() -> None:
    verdict = decode(None)
    assert isinstance(verdict, Rejected) and verdict.reason is Reason.INVALID_JSON


def test_same_bytes_same_verdict() -> None:
    """Exactly-once recovery relies on replayed messages landing in the same table."""
    raw = wire(event_dict(kind="llm_call"))
    first, second = decode(raw), decode(raw)
    assert isinstance(first, Accepted) and isinstance(second, Accepted)
    assert first.canonical == second.canonical


# --- the contract at the sink's door (issue 9: D, E, G's duplicate keys, NaN, occurred_at) ---

STAMP = "2026-11-21T10:00:00.000000Z"
STAMP_MS = 1_795_255_200_000  # STAMP in ms since the epoch


def _doc(**changes: Any) -> dict[str, Any]:
    doc = event_dict(kind="llm_call")
    doc["occurred_at"] = STAMP
    doc.update(changes)
    return doc


def _raw(doc: dict[str, Any]) -> bytes:
    # json, not orjson: orjson refuses the out-of-range integers these tests must send.
    return json.dumps(doc, separators=(",", ":")).encode()


def _verdict(raw: bytes, not_after_ms: float | None = None) -> Accepted | Rejected:
    return decode(raw, not_after_ms)


def _reason(raw: bytes, not_after_ms: float | None = None) -> str:
    verdict = _verdict(raw, not_after_ms)
    return "accepted" if isinstance(verdict, Accepted) else verdict.reason.value


def test_stamp_constant_is_right() -> None:
    event = decode(_raw(_doc()))
    assert isinstance(event, Accepted)
    assert event.occurred_at.timestamp() * 1000 == STAMP_MS


@pytest.mark.parametrize("value", [2**64, 2**63, -(2**63) - 1, 10**30, -(10**30), 2**63 + 1])
def test_attribute_integers_beyond_64_bits_are_schema_violations(value: int) -> None:
    verdict = decode(_raw(_doc(attributes={"n": value})))
    assert isinstance(verdict, Rejected) and verdict.reason is Reason.SCHEMA_VIOLATION, verdict
    assert "attributes.n" in verdict.detail


@pytest.mark.parametrize("value", [INT64_MAX, INT64_MIN, 0, -1, 1.5, -0.0, 9.2e18, True, "x"])
def test_attribute_values_in_range_are_stored_as_given(value: object) -> None:
    verdict = decode(_raw(_doc(attributes={"n": value})))
    assert isinstance(verdict, Accepted), verdict
    assert json.loads(verdict.canonical)["attributes"]["n"] == value
    assert type(verdict.document["attributes"]["n"]) is type(value)


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
@pytest.mark.parametrize("field", ["latency_ms", "agent_version", "attribute"])
def test_nan_and_infinity_are_invalid_json(literal: bytes, field: str) -> None:
    doc = _doc(attributes={"x": 1})
    raw = _raw(doc)
    target = {
        "latency_ms": b'"latency_ms":420.0',
        "agent_version": b'"agent_version":"1.0.0"',
        "attribute": b'"x":1',
    }[field]
    assert target in raw
    raw = raw.replace(target, target.split(b":")[0] + b":" + literal)
    verdict = decode(raw)
    assert isinstance(verdict, Rejected) and verdict.reason is Reason.INVALID_JSON, verdict
    assert "NaN and Infinity are not JSON" in verdict.detail


def test_a_huge_number_is_json_and_a_schema_violation() -> None:
    raw = _raw(_doc()).replace(b'"latency_ms":420.0', b'"latency_ms":1e400')
    assert _reason(raw) == "schema_violation"


def _with_repeat(raw: bytes, repeat: bytes, before: bytes) -> bytes:
    assert before in raw
    return raw.replace(before, repeat + before, 1)


@pytest.mark.parametrize(
    ("repeat", "before", "path"),
    [
        (b'"tenant_id":"evil",', b'"agent_id"', "tenant_id"),
        (b'"event_id":"01937a3e-7c9e-7d4a-9b2f-3f7a2c9e1d00",', b'"agent_id"', "event_id"),
        (b'"tenant_id" :"evil",', b'"agent_id"', "tenant_id"),  # whitespace before the colon
        (b'"tenant_id"\n\t:\r "evil" ,', b'"agent_id"', "tenant_id"),
        (b'"tenant\\u005fid":"evil",', b'"agent_id"', "tenant_id"),  # the same key, escaped
        (b'"input_tokens":1,', b'"input_tokens"', "payload.usage.input_tokens"),
        (b'"provider":"anthropic",', b'"request_model"', "payload.provider"),
        (b'"name":"other",', b'"version"', "sdk.name"),
        (b'"k":"a",', b'"k"', "attributes.k"),
    ],
)
def test_duplicate_keys_at_any_depth_are_dead_letters(
    repeat: bytes, before: bytes, path: str
) -> None:
    raw = _with_repeat(_raw(_doc(attributes={"k": "b"})), repeat, before)
    verdict = decode(raw)
    assert isinstance(verdict, Rejected) and verdict.reason is Reason.DUPLICATE_KEY, verdict
    assert verdict.detail.startswith(path + ":")


def test_a_duplicate_hidden_among_string_values_that_look_like_keys() -> None:
    # Values holding `":` and escaped quotes raise the cheap bound: the exact check decides.
    doc = _doc(attributes={"a": 'say "x": 1', "b": '{"k": "v"}', "c": '\\":'})
    raw = _raw(doc)
    assert isinstance(decode(raw), Accepted)
    assert _reason(_with_repeat(raw, b'"tenant_id":"evil",', b'"agent_id"')) == "duplicate_key"


def test_sdk_events_take_the_cheap_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ordinary events never need the exact (slow) duplicate walk."""
    from agentaudit_schemas import json_keys

    def never(raw: bytes) -> None:
        raise AssertionError("slow path taken for an ordinary event")

    monkeypatch.setattr(json_keys, "first_duplicate_key", never)
    for kind in ("llm_call", "tool_call"):
        doc = event_dict(kind=kind)
        doc["attributes"] = {"env": "prod", "retries": 2, "ratio": 0.5, "ok": True}
        doc["user_id"] = None  # an explicit null is a key too
        assert isinstance(decode(wire(doc)), Accepted)
        assert isinstance(decode(json.dumps(doc, indent=2).encode()), Accepted)


@pytest.mark.parametrize(
    ("stamp", "reason"),
    [
        ("0001-01-01T00:00:00Z", "schema_violation"),
        ("1999-12-31T23:59:59.999999Z", "schema_violation"),
        ("2000-01-01T00:00:00Z", "accepted"),
        ("2000-01-01T00:30:00+01:00", "schema_violation"),  # 1999 in UTC
        ("2199-12-31T23:59:59.999999Z", "accepted"),
        ("2200-01-01T00:00:00Z", "schema_violation"),
        ("9999-12-31T23:59:59Z", "schema_violation"),
        ("9999-12-31T23:59:59-01:00", "schema_violation"),  # overflowed in the UTC conversion
        ("0001-01-01T00:00:00+01:00", "schema_violation"),
    ],
)
def test_occurred_at_range(stamp: str, reason: str) -> None:
    verdict = decode(_raw(_doc(occurred_at=stamp)))
    assert _reason(_raw(_doc(occurred_at=stamp))) == reason
    if isinstance(verdict, Rejected):
        assert "occurred_at" in verdict.detail


def test_occurred_at_after_the_record_timestamp_plus_skew_is_in_the_future() -> None:
    raw = _raw(_doc())
    assert _reason(raw, STAMP_MS) == "accepted"  # exactly at the limit
    assert _reason(raw, STAMP_MS - 1) == "occurred_at_in_future"
    verdict = decode(raw, STAMP_MS - 1)
    assert isinstance(verdict, Rejected) and verdict.detail.startswith("occurred_at:")
    # Any age in the past is accepted: backfill.
    old = _raw(_doc(occurred_at="2000-01-01T00:00:00Z"))
    assert _reason(old, STAMP_MS) == "accepted"


def test_an_unforeseen_exception_is_a_dead_letter_not_a_crash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def boom(document: object) -> bytes:
        raise TypeError("Integer exceeds 64-bit range")

    monkeypatch.setattr(decode_module, "document_bytes", boom)
    verdict = decode(_raw(_doc()))
    assert isinstance(verdict, Rejected) and verdict.reason is Reason.UNENCODABLE
    assert verdict.detail == "TypeError: Integer exceeds 64-bit range"


def test_an_exception_in_the_plain_validator_leaves_the_verdict_to_the_models(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    raw = _raw(_doc())
    expected = decode(raw)
    assert isinstance(expected, Accepted)

    def boom(value: object) -> object:
        raise RuntimeError("not foreseen")

    monkeypatch.setattr(decode_module, "plain_event", boom)
    before = decode_module.Disagreements.count
    assert decode(raw) == expected
    assert decode_module.Disagreements.count == before + 1  # counted: a gap, not a verdict


def _nasty_values() -> list[object]:
    return [
        2**64,
        -(2**63) - 1,
        2**63 - 1,
        -(2**63),
        10**400,
        -(10**400),
        2**53 + 1,
        0,
        -0.0,
        1e308,
        1e-320,
        5e-324,
        1.7976931348623157e308,
        "",
        "\x00",
        "a\x00b",
        "\ud83d\ude00",
        "\u2028",
        "x" * 300,
        "é" * 200,
        True,
        False,
        None,
        [],
        {},
        [[[[[]]]]],
        {"a": {"b": {"c": 1}}},
        [1, "a", None],
    ]


_RAW_NUMBERS = [
    b"1e400",
    b"-1e400",
    b"1" + b"0" * 5000,
    b"-0",
    b"0e0",
    b"1E+2",
    b"NaN",
    b"-Infinity",
]
_RAW_STRINGS = [
    b'"\\ud800"',
    b'"\\udc00x"',
    b'"\\ud800\\u0041"',
    b'"\xed\xa0\x80"',
    b'"\xff\xfe"',
    b'"\xc0\xaf"',
    b'"\\u0000"',
    b'"\\/"',
    b'"\x01"',
    b'"unterminated',
]
_FIELDS = [
    "tenant_id",
    "event_id",
    "occurred_at",
    "agent_version",
    "latency_ms",
    "attributes",
    "payload",
    "type",
    "schema_version",
    "sdk",
    "user_id",
]
_KNOWN = {r.value for r in Reason}


def test_decode_never_raises_on_nasty_input() -> None:
    """Property-style: every nasty value in every field, as a Python value and as raw text."""
    base = _raw(_doc(attributes={"k": "v"}))
    cases: list[bytes] = []
    for field in _FIELDS:
        for value in _nasty_values():
            cases.append(_raw(_doc(**{field: value})))
            cases.append(_raw(_doc(attributes={"k": value})))
        key = b'"%s":' % field.encode()
        start = base.index(key) + len(key) if key in base else None
        if start is None:
            continue
        end = start
        depth = 0
        while True:  # find the end of the field's value (no commas or braces inside strings here)
            c = base[end : end + 1]
            if c in (b"{", b"["):
                depth += 1
            elif c in (b"}", b"]"):
                if depth == 0:
                    break
                depth -= 1
            elif c == b"," and depth == 0:
                break
            end += 1
        for literal in _RAW_NUMBERS + _RAW_STRINGS + [b"[" * 10_000 + b"]" * 10_000, b"{" * 600]:
            cases.append(base[:start] + literal + base[end:])
    cases += [
        b"",
        b"{}",
        b"null",
        b"[]",
        b'"x"',
        b"1",
        b"\xff" * 10,
        b"{" * 100_000,
        base[:-1],
        base + b"x",
        b"\xef\xbb\xbf" + base,
        base.replace(b"{", b"{ ", 1),
        b"x" * (MAX_EVENT_BYTES + 1),
    ]
    for raw in cases:
        for not_after in (None, 0, STAMP_MS):
            verdict = decode(raw, not_after)  # must not raise
            if isinstance(verdict, Rejected):
                assert verdict.reason.value in _KNOWN and verdict.detail, raw[:100]
            else:
                # What is accepted can be stored: canonical bytes that parse back to it.
                assert decode(verdict.canonical).document == verdict.document  # type: ignore[union-attr]
