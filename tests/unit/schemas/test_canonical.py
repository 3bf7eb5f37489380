"""Canonical bytes are stable and well-formed; the chain hash is SHA-256(prev_hash ‖ bytes)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from agentaudit_schemas.canonical import GENESIS_HASH, canonical_bytes, chain_hash
from agentaudit_schemas.events import EVENT_CLASSES, event_from_dict, parse_event
from tests.unit.schemas.examples import event

GOLDEN_EVENT = event("run_finished", occurred_at="2026-11-21T11:00:00+01:00")
GOLDEN_BYTES = (
    b'{"agent_id":"support-bot","agent_version":"1.4.2","attributes":{},"deployment":"prod",'
    b'"event_id":"01937b2e-5c4a-7d3e-9f10-2b3c4d5e6f70","occurred_at":"2026-11-21T10:00:00.000000Z",'
    b'"payload":{"duration_ms":1520.5,"steps":3,"stop_reason":"completed"},"schema_version":1,'
    b'"sdk":{"name":"agentaudit-py","version":"0.1.0"},"span_id":"00f067aa0ba902b7",'
    b'"tenant_id":"acme","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","type":"run_finished"}'
)
GOLDEN_HASH = "391fa2f250fed0d3ce59958b80e233c4e832795d869e35c2370b13ea131c730e"
"""SHA-256(GENESIS_HASH ‖ GOLDEN_BYTES): pinned, so any change to the canonical form is loud."""


def _canon(data: dict[str, Any]) -> bytes:
    return canonical_bytes(parse_event(orjson.dumps(data)))


def _reordered(value: Any) -> Any:
    """The same JSON value with every object's keys in reverse order."""
    if isinstance(value, dict):
        return {k: _reordered(value[k]) for k in reversed(list(value))}
    return value


def test_golden_event_bytes_and_hash() -> None:
    assert _canon(GOLDEN_EVENT) == GOLDEN_BYTES
    assert chain_hash(GENESIS_HASH, GOLDEN_BYTES) == GOLDEN_HASH


@pytest.mark.parametrize("type_", sorted(EVENT_CLASSES))
def test_stable_across_input_key_order(type_: str) -> None:
    data = event(type_, attributes={"b": 1, "a": "x", "c": True})
    assert list(_reordered(data)) != list(data)
    assert _canon(_reordered(data)) == _canon(data)


@pytest.mark.parametrize(
    "stamp",
    [
        "2026-11-21T10:00:00.123456Z",
        "2026-11-21T10:00:00.123456+00:00",
        "2026-11-21T12:00:00.123456+02:00",
        "2026-11-21T04:30:00.123456-05:30",
    ],
)
def test_stable_across_timezone_offset(stamp: str) -> None:
    assert b'"occurred_at":"2026-11-21T10:00:00.123456Z"' in _canon(event(occurred_at=stamp))


def test_python_and_json_inputs_give_the_same_bytes() -> None:
    data = event("tool_call")
    from_sdk = event_from_dict({**data, "occurred_at": datetime.fromisoformat(data["occurred_at"])})
    assert canonical_bytes(from_sdk) == _canon(data)


def test_timestamps_always_carry_six_fraction_digits() -> None:
    # orjson alone would print "…T10:00:00Z" for a whole second: the form must be fixed-width.
    whole = event(occurred_at=datetime(2026, 11, 21, 10, tzinfo=UTC).isoformat())
    assert b'"occurred_at":"2026-11-21T10:00:00.000000Z"' in _canon(whole)
    assert b'"occurred_at":"2026-11-21T10:00:00.000001Z"' in _canon(
        event(occurred_at="2026-11-21T10:00:00.000001Z")
    )


def test_absent_optional_fields_are_omitted() -> None:
    data = event(user_id=None, variant=None)
    data["payload"]["response_model"] = None
    raw = _canon(data)
    for name in (
        b"user_id",
        b"variant",
        b"session_id",
        b"parent_span_id",
        b"response_model",
        b"ttft_ms",
        b"content",
        b"provider_cost_usd",
    ):
        assert b'"' + name + b'"' not in raw
    assert _canon(data) == _canon(event())


def test_keys_sorted_at_every_level_and_no_whitespace() -> None:
    data = event(attributes={"zeta": 1, "alpha": 2, "Mid": 3})
    data["payload"]["content"] = {"response": "hi", "prompt": "hello", "handling": "plain"}
    raw = _canon(data)

    def check(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        assert keys == sorted(keys), keys
        return dict(pairs)

    json.loads(raw, object_pairs_hook=check)
    assert b" " not in raw.replace(b"lookup customer", b"") and b"\n" not in raw
    assert raw.decode("utf-8")  # UTF-8


def test_non_ascii_is_utf8_not_escaped() -> None:
    data = event("error")
    data["payload"]["message"] = "délai dépassé ✓"
    assert "délai dépassé ✓".encode() in _canon(data)


def test_chain_hash_known_answers() -> None:
    # FIPS 180-2 test vector: SHA-256("abc"). prev_hash and bytes are concatenated, no separator.
    abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert chain_hash("", b"abc") == abc
    assert chain_hash("a", b"bc") == abc
    assert (
        chain_hash(GENESIS_HASH, GOLDEN_BYTES)
        == hashlib.sha256(b"0" * 64 + GOLDEN_BYTES).hexdigest()
    )
    assert GENESIS_HASH == "0" * 64


def test_chain_links_previous_hash() -> None:
    first = chain_hash(GENESIS_HASH, GOLDEN_BYTES)
    second = chain_hash(first, GOLDEN_BYTES)
    assert second == hashlib.sha256(first.encode("ascii") + GOLDEN_BYTES).hexdigest()
    assert second != first


def test_any_changed_byte_changes_the_hash() -> None:
    seen = {chain_hash(GENESIS_HASH, GOLDEN_BYTES)}
    for i in range(0, len(GOLDEN_BYTES), 7):
        tampered = bytearray(GOLDEN_BYTES)
        tampered[i] ^= 0x01
        seen.add(chain_hash(GENESIS_HASH, bytes(tampered)))
    assert len(seen) == 1 + len(range(0, len(GOLDEN_BYTES), 7))
    other_prev = "0" * 63 + "1"
    assert chain_hash(other_prev, GOLDEN_BYTES) not in seen


def test_a_changed_field_changes_the_bytes() -> None:
    assert _canon(event(tenant_id="acme2")) != _canon(event())
    assert _canon(event(occurred_at="2026-11-21T10:00:00.123457Z")) != _canon(event())
