"""The event contract: every type validates from a minimal example; bad input is rejected."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from agentaudit_schemas.canonical import canonical_bytes
from agentaudit_schemas.envelope import MAX_ATTRIBUTE_KEY, MAX_ATTRIBUTE_VALUE, MAX_ATTRIBUTES
from agentaudit_schemas.events import EVENT_CLASSES, event_from_dict, parse_event
from agentaudit_schemas.payloads import MAX_CONTENT_CHARS, StopReason
from tests.unit.schemas.examples import PAYLOADS, event

ALL_TYPES = sorted(EVENT_CLASSES)


def _wire(data: dict[str, Any]) -> bytes:
    return orjson.dumps(data)


def _python(data: dict[str, Any]) -> dict[str, Any]:
    """The mapping as the SDK builds it: a datetime, not an ISO string (strict Python mode)."""
    stamp = data.get("occurred_at")
    if isinstance(stamp, str):
        return {**data, "occurred_at": datetime.fromisoformat(stamp)}
    return data


def _rejected(data: dict[str, Any]) -> None:
    """Invalid both on the wire (sink) and as a Python mapping (SDK)."""
    with pytest.raises(ValidationError):
        parse_event(_wire(data))
    with pytest.raises(ValidationError):
        event_from_dict(_python(data))


def test_examples_cover_every_event_type() -> None:
    assert set(PAYLOADS) == set(EVENT_CLASSES)


@pytest.mark.parametrize("type_", ALL_TYPES)
def test_minimal_example_validates_from_json(type_: str) -> None:
    parsed = parse_event(_wire(event(type_)))
    assert isinstance(parsed, EVENT_CLASSES[type_])
    assert parsed.tenant_id == "acme"
    assert parsed.schema_version == 1


@pytest.mark.parametrize("type_", ALL_TYPES)
def test_minimal_example_validates_from_python_dict(type_: str) -> None:
    # The SDK builds plain dicts: enum values arrive as strings, timestamps as datetimes.
    parsed = event_from_dict(_python(event(type_)))
    assert isinstance(parsed, EVENT_CLASSES[type_])


@pytest.mark.parametrize("type_", ALL_TYPES)
def test_canonical_bytes_parse_back_to_the_same_event(type_: str) -> None:
    parsed = parse_event(_wire(event(type_)))
    assert parse_event(canonical_bytes(parsed)) == parsed


def test_enum_fields_take_their_value_in_python_mode() -> None:
    parsed = event_from_dict(_python(event("run_finished")))
    assert parsed.payload.stop_reason is StopReason.COMPLETED  # type: ignore[attr-defined]


def test_timestamps_are_normalised_to_utc() -> None:
    parsed = parse_event(_wire(event(occurred_at="2026-11-21T12:00:00.5+02:00")))
    assert parsed.occurred_at.tzinfo is UTC
    assert parsed.occurred_at == datetime(2026, 11, 21, 10, 0, 0, 500000, tzinfo=UTC)
    local = datetime(2026, 11, 21, 5, tzinfo=timezone(timedelta(hours=-5)))
    from_sdk = event_from_dict(event(occurred_at=local))
    assert from_sdk.occurred_at.tzinfo is UTC and from_sdk.occurred_at.hour == 10


def test_optional_envelope_fields_are_accepted() -> None:
    data = event(
        user_id="u-123",
        session_id="s-1",
        run_id="r-1",
        parent_span_id="1111111111111111",
        deployment="staging",
        variant="canary",
        attributes={"region": "eu", "retries": 2, "ratio": 0.5, "cached": True},
    )
    assert parse_event(_wire(data)).attributes["retries"] == 2


# --- rejections ---------------------------------------------------------------------------


def test_rejects_extra_field_in_envelope() -> None:
    _rejected(event(colour="blue"))


def test_rejects_extra_field_in_payload() -> None:
    data = event()
    data["payload"]["cost_usd"] = 0.1
    _rejected(data)


def test_rejects_string_for_int_strictly() -> None:
    data = event()
    data["payload"]["usage"]["input_tokens"] = "5"
    _rejected(data)


def test_rejects_float_for_int_and_bool_for_str() -> None:
    data = event()
    data["payload"]["usage"]["output_tokens"] = 5.5
    _rejected(data)
    _rejected(event(agent_version=True))


@pytest.mark.parametrize(
    "tenant", ["Acme", "acme corp", "-acme", "acme_inc", "a" * 64, "", "acme\n"]
)
def test_rejects_bad_tenant_slug(tenant: str) -> None:
    _rejected(event(tenant_id=tenant))


def test_tenant_slug_limits() -> None:
    assert parse_event(_wire(event(tenant_id="a" * 63))).tenant_id == "a" * 63
    assert parse_event(_wire(event(tenant_id="0-acme-eu"))).tenant_id == "0-acme-eu"


@pytest.mark.parametrize(
    "field,value",
    [
        ("trace_id", "4BF92F3577B34DA6A3CE929D0E0E4736"),
        ("trace_id", "4bf92f3577b34da6a3ce929d0e0e473"),
        ("trace_id", "4bf92f35-77b3-4da6-a3ce-929d0e0e4736"),
        ("span_id", "00f067aa0ba902b"),
        ("span_id", "00f067aa0ba902b7a"),
        ("span_id", "00f067aa0ba902bz"),
        ("parent_span_id", "xyz"),
    ],
)
def test_rejects_bad_trace_and_span_ids(field: str, value: str) -> None:
    _rejected(event(**{field: value}))


@pytest.mark.parametrize(
    "event_id",
    [
        str(uuid.UUID("6f1e4a2c-1f0b-4c3d-8e9f-0a1b2c3d4e5f")),  # version 4
        "01937b2e-5c4a-1d3e-9f10-2b3c4d5e6f70",  # version 1
        "01937b2e-5c4a-7d3e-cf10-2b3c4d5e6f70",  # wrong variant
        "01937B2E-5C4A-7D3E-9F10-2B3C4D5E6F70",  # upper case is not canonical
        "01937b2e5c4a7d3e9f102b3c4d5e6f70",  # no hyphens
    ],
)
def test_rejects_non_uuidv7_event_id(event_id: str) -> None:
    _rejected(event(event_id=event_id))


def test_rejects_naive_timestamp() -> None:
    with pytest.raises(ValidationError, match="timezone"):
        parse_event(_wire(event(occurred_at="2026-11-21T10:00:00")))
    with pytest.raises(ValidationError, match="timezone"):
        event_from_dict(event(occurred_at=datetime(2026, 11, 21, 10)))


def test_rejects_too_many_attributes() -> None:
    ok = {f"k{i}": i for i in range(MAX_ATTRIBUTES)}
    assert len(parse_event(_wire(event(attributes=ok))).attributes) == MAX_ATTRIBUTES
    _rejected(event(attributes={**ok, "one_more": 1}))


def test_rejects_oversized_attribute_key_and_value_and_nested_values() -> None:
    _rejected(event(attributes={"k" * (MAX_ATTRIBUTE_KEY + 1): 1}))
    _rejected(event(attributes={"": 1}))
    _rejected(event(attributes={"k": "v" * (MAX_ATTRIBUTE_VALUE + 1)}))
    _rejected(event(attributes={"k": {"nested": 1}}))
    _rejected(event(attributes={"k": [1, 2]}))


def test_rejects_oversized_content() -> None:
    data = event()
    data["payload"]["content"] = {"handling": "plain", "prompt": "x" * MAX_CONTENT_CHARS}
    parse_event(_wire(data))
    data["payload"]["content"]["prompt"] = "x" * (MAX_CONTENT_CHARS + 1)
    _rejected(data)


def test_rejects_cached_plus_cache_write_above_input() -> None:
    data = event()
    data["payload"]["usage"] = {
        "input_tokens": 100,
        "output_tokens": 10,
        "cached_input_tokens": 80,
        "cache_write_tokens": 30,
    }
    with pytest.raises(ValidationError, match="exceed input_tokens"):
        parse_event(_wire(data))
    data["payload"]["usage"]["cache_write_tokens"] = 20  # exactly input: allowed
    parse_event(_wire(data))


def test_rejects_reasoning_above_output() -> None:
    data = event()
    data["payload"]["usage"] = {"input_tokens": 10, "output_tokens": 10, "reasoning_tokens": 11}
    _rejected(data)


def test_rejects_unknown_type_and_missing_type() -> None:
    _rejected(event(type="llm_called"))
    data = event()
    del data["type"]
    _rejected(data)


def test_rejects_payload_of_another_type() -> None:
    _rejected({**event("tool_call"), "payload": PAYLOADS["llm_call"]})


@pytest.mark.parametrize("field", ["tenant_id", "event_id", "occurred_at", "trace_id", "payload"])
def test_rejects_missing_required_field(field: str) -> None:
    data = event()
    del data[field]
    _rejected(data)


def test_rejects_future_schema_version() -> None:
    _rejected(event(schema_version=2))


def test_rejects_non_finite_floats() -> None:
    # NaN/Infinity are not JSON; pydantic's parser accepts the literals unless told not to,
    # and canonical bytes would then carry null (lost value, bytes that no longer validate).
    raw = _wire(event("eval_result")).replace(b'"score":0.8', b'"score":NaN')
    assert b"NaN" in raw
    with pytest.raises(ValidationError):
        parse_event(raw)
    with pytest.raises(ValidationError):
        event_from_dict(_python(event(attributes={"ratio": float("inf")})))


def test_events_are_immutable() -> None:
    parsed = parse_event(_wire(event()))
    with pytest.raises(ValidationError):
        parsed.tenant_id = "other"  # type: ignore[misc]
