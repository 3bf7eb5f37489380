"""A record timestamp valid as written but outside years 1-9999 in UTC is a validation error,
not an OverflowError escaping validation (which stopped every reader of the record)."""

from __future__ import annotations

import orjson
import pytest
from pydantic import ValidationError

from agentaudit_schemas.records import Alert
from agentaudit_sdk.control import InvalidRecord, decode_control
from tests.unit.sink.pipeline_records.factories import alert, control, wire


@pytest.mark.parametrize("at", ["0001-01-01T00:30:00+01:00", "9999-12-31T23:30:00-01:00"])
def test_a_time_past_the_calendar_in_utc_is_a_validation_error(at: str) -> None:
    with pytest.raises(ValidationError, match="outside years 1-9999"):
        Alert.model_validate_json(orjson.dumps({**orjson.loads(wire(alert())), "fired_at": at}))
    with pytest.raises(InvalidRecord):  # the SDK's control listener skips and counts it
        decode_control(orjson.dumps({**orjson.loads(wire(control())), "until": at}))
