"""Each bound of the contract is the same for the models and for an independent producer that
validates against the published JSON Schema alone (the `jsonschema` library, draft 2020-12)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from pydantic import ValidationError

from agentaudit_schemas import export
from agentaudit_schemas.envelope import INT64_MAX, INT64_MIN
from agentaudit_schemas.events import parse_event
from agentaudit_schemas.json_keys import first_duplicate_key, key_token_bound, model_key_count
from tests.unit.schemas.examples import event

VALIDATOR = Draft202012Validator(json.loads(export.SCHEMA_PATH.read_text(encoding="utf-8")))


def _models_accept(raw: bytes) -> bool:
    try:
        parse_event(raw)
    except ValidationError:
        return False
    return True


def _agree(doc: dict[str, Any]) -> bool:
    """Both sides' verdict on `doc`; fails the test when they differ."""
    raw = json.dumps(doc).encode()
    by_schema = VALIDATOR.is_valid(json.loads(raw))
    assert _models_accept(raw) == by_schema, (doc, by_schema)
    return by_schema


def test_examples_are_valid_on_both_sides() -> None:
    assert _agree(event("llm_call"))


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        (INT64_MAX, True),
        (INT64_MIN, True),
        (INT64_MAX + 1, False),
        (INT64_MIN - 1, False),
        (2**64, False),
        (-(2**64), False),
        (10**30, False),
        (1.5, True),
        (-9.2e18, True),
        (1e19, False),
        (float(2**63), False),  # also what `9223372036854775807.0` parses to
        (float(2**63 - 1024), True),  # the largest float below it
        (-float(2**63), True),
        (-1e19, False),
        (1e300, False),
        (0, True),
        (True, True),
        ("x", True),
    ],
)
def test_attribute_number_bounds(value: object, valid: bool) -> None:
    assert _agree(event("tool_call", attributes={"n": value})) is valid


@pytest.mark.parametrize(
    ("stamp", "valid"),
    [
        ("2026-11-21T10:00:00Z", True),
        ("2000-01-01T00:00:00Z", True),
        ("2199-12-31T23:59:59.999999Z", True),
        ("2000-01-01T00:00:00-05:00", True),
        ("1999-12-31T23:59:59Z", False),
        ("2200-01-01T00:00:00Z", False),
        ("0001-01-01T00:00:00Z", False),
        ("9999-12-31T23:59:59Z", False),
        ("1999-12-31T20:00:00-05:00", False),  # 2000-01-01T01:00Z, but written in 1999
        ("1900-01-01T00:00:00Z", False),
        ("2300-01-01T00:00:00Z", False),
        ("2026-11-21t10:00:00.5z", True),
        ("1795255200", False),  # unix seconds as text: pydantic's parser took it
        ("1795255200000", False),
        ("2026-11-21T10:00Z", False),
        ("2026-11-21T10:00:00,5Z", False),
        ("2026-11-21T10:00:00+0100", False),
        ("2026-11-21 10:00:00Z", False),
    ],
)
def test_occurred_at_bounds(stamp: str, valid: bool) -> None:
    assert _agree(event("tool_call", occurred_at=stamp)) is valid


def test_occurred_at_range_is_published() -> None:
    schema = json.loads(export.SCHEMA_PATH.read_text(encoding="utf-8"))
    occurred = schema["$defs"]["ToolCallEvent"]["properties"]["occurred_at"]
    assert occurred["pattern"] and "2200-01-01T00:00:00Z" in occurred["description"]


def _keys_written(raw: bytes) -> int:
    sizes: list[int] = []
    json.loads(raw, object_pairs_hook=lambda pairs: sizes.append(len(pairs)))
    return sum(sizes)


def test_key_token_bound_is_never_below_the_keys_written() -> None:
    docs = [
        b'{"a":1}',
        b'{ "a" : 1 , "b"\n:\t{"c" :2}}',
        b'{"a\\"":"\\":","b":"x"}',
        b'{"a":"\\\\","b":"\\\\\\":"}',
        b'{"a":[{"b":1},{"b":2}]}',
        b'{"\\u0061":1,"a":2}',
    ]
    for raw in docs:
        assert key_token_bound(raw) >= _keys_written(raw), raw


def test_first_duplicate_key_names_the_path() -> None:
    assert first_duplicate_key(b'{"a":{"b":1,"c":[{"d":1,"d":2}]}}') == "a.c[0].d"
    assert first_duplicate_key(b'{"\\u0061":1,"a":2}') == "a"
    assert first_duplicate_key(b'{"a":{"b":1},"b":{"b":1}}') is None


def test_model_key_count_counts_every_key_read() -> None:
    doc = event("llm_call", attributes={"x": 1, "y": "z"}, user_id=None)
    raw = json.dumps(doc).encode()
    assert model_key_count(parse_event(raw)) == _keys_written(raw)


@pytest.mark.parametrize(
    ("value", "valid"), [(0, True), (INT64_MAX, True), (INT64_MAX + 1, False), (2**64, False)]
)
def test_unbounded_counts_are_signed_64_bit(value: int, valid: bool) -> None:
    # Unbounded before: 2**64 passed both and could not be written as canonical bytes.
    query = event("auditor_query")
    query["payload"]["read_rows"] = value
    assert _agree(query) is valid
    retention = event("retention_applied")
    retention["payload"]["horizons"] = [value]
    assert _agree(retention) is valid


def test_occurred_at_from_python_is_a_datetime_only() -> None:
    # Built in Python (the SDK), the field takes a datetime, as strict mode always did: the
    # text check of JSON input must not make it parse strings there.
    from pydantic import ValidationError as Invalid

    from agentaudit_schemas.events import event_from_dict

    for value in ("2026-11-21T10:00:00Z", "1795255200", 1_795_255_200):
        with pytest.raises(Invalid, match="datetime_type"):
            event_from_dict(event("tool_call", occurred_at=value))
