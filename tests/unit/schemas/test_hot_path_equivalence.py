"""The sink's cheaper paths give exactly what the plain ones give (issue 14, hot path).

`canonical.canonical_timestamp` lets orjson write `occurred_at` when it can (a UTC datetime with a
fraction) and `_timestamp` otherwise; `envelope._utc` skips asking pydantic's fixed offsets
whether they have one; `parse_event` calls the adapter's validator directly.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone, tzinfo

import orjson
import pytest
from pydantic import TypeAdapter, ValidationError

from agentaudit_schemas.canonical import _timestamp, canonical_timestamp
from agentaudit_schemas.envelope import UtcDatetime
from agentaudit_schemas.events import EVENT_ADAPTER, parse_event
from tests.faults.corpus import cases
from tests.unit.schemas.examples import PAYLOADS, event

_FRACTIONS = [0, 1, 9, 10, 99, 100, 999, 1000, 99_999, 100_000, 123_000, 500_000, 999_999]


def _instants(n: int) -> list[datetime]:
    rng = random.Random(14)
    start, span = datetime(2000, 1, 1, tzinfo=UTC), 200 * 365 * 86_400
    out = [start + timedelta(seconds=rng.randrange(span), microseconds=us) for us in _FRACTIONS]
    out += [
        start + timedelta(seconds=rng.randrange(span), microseconds=rng.randrange(1_000_000))
        for _ in range(n)
    ]
    return out + [datetime(2199, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC), start]


def test_occurred_at_text_is_the_canonical_timestamp() -> None:
    for at in _instants(20_000):
        assert canonical_timestamp(at) == _timestamp(at), at
        # The same instants in other zones, as pydantic parses them, and as fixed offsets.
        for tz in (timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=11))):
            assert canonical_timestamp(at.astimezone(tz)) == _timestamp(at), at


def test_occurred_at_text_refuses_what_timestamp_refuses() -> None:
    with pytest.raises(TypeError):
        canonical_timestamp(datetime(2026, 1, 1, 0, 0, 0, 5))  # naive
    with pytest.raises(TypeError):
        canonical_timestamp("2026-01-01T00:00:00Z")


class _NoOffset(tzinfo):
    def utcoffset(self, dt: datetime | None) -> timedelta | None:
        return None


_UTC_ADAPTER: TypeAdapter[datetime] = TypeAdapter(UtcDatetime)


@pytest.mark.parametrize(
    "text",
    ["2026-11-21T10:00:00Z", "2026-11-21T11:00:00.5+01:00", "2026-11-21T04:30:00-05:30"],
)
def test_utc_normalises_parsed_offsets(text: str) -> None:
    value = _UTC_ADAPTER.validate_json(f'"{text}"')
    assert value.tzinfo is UTC
    assert value == datetime.fromisoformat(text)


def test_utc_still_refuses_naive_and_offsetless_times() -> None:
    with pytest.raises(ValidationError, match="timestamp must carry a timezone"):
        _UTC_ADAPTER.validate_python(datetime(2026, 1, 1))
    with pytest.raises(ValidationError, match="timestamp must carry a timezone"):
        _UTC_ADAPTER.validate_python(datetime(2026, 1, 1, tzinfo=_NoOffset()))


def test_parse_event_is_the_adapters_validation() -> None:
    """Same model for every valid event, same errors for every corpus case."""
    values = [f'{{"bad": {i}}}'.encode() for i in range(3)]
    values += [orjson.dumps(event(t)) for t in PAYLOADS]
    values += [c.value for c in cases() if c.value is not None and not c.big]
    for value in values:
        try:
            expected = EVENT_ADAPTER.validate_json(value)
        except ValidationError as exc:
            with pytest.raises(ValidationError) as got:
                parse_event(value)
            # Context (exception objects) and input (NaN) do not compare equal: the text holds both.
            assert got.value.errors(include_context=False, include_input=False) == exc.errors(
                include_context=False, include_input=False
            )
            assert str(got.value) == str(exc)
        else:
            assert parse_event(value) == expected
