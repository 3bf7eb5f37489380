"""The envelope every agentaudit event carries, and the validated id types it is built from.

Caps are part of the contract: a producer that exceeds them gets its event dead-lettered
with the reason, never truncated silently.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)
from pydantic_core import PydanticCustomError, SchemaValidator, TzInfo, core_schema

SCHEMA_VERSION = 1

MAX_ATTRIBUTES = 32
MAX_ATTRIBUTE_KEY = 64
MAX_ATTRIBUTE_VALUE = 256

TenantId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]
"""Lower-case slug; it is the Kafka key, the first column of every sort key, the scope of access."""
Slug = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")]
"""Identifier for agents, models, tools, rules: printable, no spaces, at most 128 chars."""
OpaqueId = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$")
]
"""Caller-chosen id (user, session, run): printable ASCII, no spaces, at most 128 chars."""
Label = Annotated[str, StringConstraints(min_length=1, max_length=256)]
"""Short human-readable text (an action, a resource, a reason)."""
TraceId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
SpanId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{16}$")]
Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
EventId = Annotated[
    str,
    StringConstraints(
        pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"
    ),
]
"""UUIDv7 in canonical lower-case text form: time-ordered, made by the SDK, the idempotency key."""

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
"""Numbers in attributes lie in the signed 64-bit range: what orjson writes and ClickHouse reads.

An integer outside it would pass validation and then fail canonicalisation (orjson raises on
it), so it is a `schema_violation`. Floats share the range, so that one rule covers every
number (an independent JSON Schema validator counts `1e20` as an integer).
"""
AttributeNumber = Field(ge=INT64_MIN, le=INT64_MAX)
AttributeFloat = Field(ge=INT64_MIN, lt=INT64_MAX + 1)
"""The same range for floats, open at the top: `le=INT64_MAX` compares as a float, and
float(INT64_MAX) is 2**63, so 2**63 (also written `9223372036854775807.0`) passed the models
while the JSON Schema and the README put it outside."""


def _not_an_int(value: object) -> object:
    # Strict floats still take JSON integers: without this, 2**63 + 1 (out of the int range)
    # would be kept as an inexact float instead of being rejected.
    if isinstance(value, int):
        raise ValueError("integer outside the signed 64-bit range")  # noqa: TRY004 - pydantic wants ValueError
    return value


# Left to right: in strict mode each JSON type fits one member (a float takes a JSON integer,
# but the integer member comes first), so the first fit is the only one, as in the default
# "smart" mode, which tries every member and so called `_not_an_int` for every attribute
# (1.6 µs per event on the sink's hot path).
AttributeValue = Annotated[
    Annotated[str, StringConstraints(max_length=MAX_ATTRIBUTE_VALUE)]
    | Annotated[int, AttributeNumber]
    | Annotated[float, AttributeFloat, BeforeValidator(_not_an_int)]
    | bool,
    Field(union_mode="left_to_right"),
]


def _utc(value: datetime) -> datetime:
    """Reject naive timestamps (their zone is a guess) and normalise the rest to UTC."""
    tz = value.tzinfo
    # The offset pydantic parsed from the text (`TzInfo`) is fixed: there is no need to ask it
    # (1.5 µs per event on the sink's hot path); any other tzinfo may answer None.
    if tz is None or (type(tz) is not TzInfo and value.utcoffset() is None):
        raise ValueError("timestamp must carry a timezone (UTC recommended)")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        # "0001-01-01T00:30:00+01:00": pydantic wraps only ValueError, and an OverflowError
        # escaped every reader of records (the SDK's control listener, the record sink).
        raise ValueError("timestamp is outside years 1-9999 in UTC") from None


UtcDatetime = Annotated[datetime, AfterValidator(_utc)]

OCCURRED_AT_MIN = datetime(2000, 1, 1, tzinfo=UTC)
OCCURRED_AT_END = datetime(2200, 1, 1, tzinfo=UTC)
"""`occurred_at` lies in [OCCURRED_AT_MIN, OCCURRED_AT_END): inside ClickHouse's DateTime64
range (1900–2299) with a margin for any UTC offset, and far from Python's year 1 and 9999."""
OCCURRED_AT_PATTERN = (
    r"^2[01][0-9]{2}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
"""RFC 3339's date-time (section 5.6) with the year as written 2000–2199: the JSON Schema's
`pattern` and the models' own check (`_rfc3339`)."""
_OCCURRED_AT_TEXT = re.compile(OCCURRED_AT_PATTERN)
OCCURRED_AT_DESCRIPTION = (
    "When the event happened: an RFC 3339 date-time with an explicit offset (UTC recommended). "
    "The year as written is 2000-2199 and the instant, in UTC, is from 2000-01-01T00:00:00Z up "
    "to (not including) 2200-01-01T00:00:00Z; the sink also dead-letters an event more than "
    "AGENTAUDIT_MAX_CLOCK_SKEW_S (900 s) after its Kafka record's timestamp "
    "(occurred_at_in_future). Any age in the past within the range is accepted (backfill)."
)


def _occurred_at(value: datetime) -> datetime:
    """The contract's time range, checked before the UTC conversion, which overflows near
    years 1 and 9999 (an OverflowError would escape validation)."""
    if not OCCURRED_AT_MIN.year <= value.year < OCCURRED_AT_END.year:
        raise ValueError(
            f"occurred_at year {value.year} outside "
            f"{OCCURRED_AT_MIN.year}-{OCCURRED_AT_END.year - 1}"
        )
    value = _utc(value)
    if not OCCURRED_AT_MIN <= value < OCCURRED_AT_END:
        raise ValueError(
            f"occurred_at {value.isoformat()} outside [{OCCURRED_AT_MIN.isoformat()}, "
            f"{OCCURRED_AT_END.isoformat()})"
        )
    return value


_STRICT_DATETIME = SchemaValidator(core_schema.datetime_schema(strict=True))
"""What `occurred_at` was before `_rfc3339`: pydantic's strict datetime, from JSON."""


def _strict_refusal(value: object) -> None:
    """Raise what strict mode said of `value` from JSON, word for word, if it refused it."""
    try:
        _STRICT_DATETIME.validate_json(orjson.dumps(value))
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        raise PydanticCustomError(first["type"], first["msg"]) from None
    except orjson.JSONEncodeError:  # an integer past 64 bits: strict mode said this of numbers
        raise PydanticCustomError("datetime_type", "Input should be a valid datetime") from None


def _rfc3339(
    value: object, handler: ValidatorFunctionWrapHandler, info: ValidationInfo
) -> datetime:
    """The text must be RFC 3339's date-time. pydantic's parser also takes what is none, and
    the sink stored it while the JSON Schema refused it: a string of unix seconds or
    milliseconds ("1763719200", "1763719200000": no offset, the unit guessed), "10:00Z"
    without seconds, "10:00:00,5Z", "+0100", a space for the "T".

    The value reaches this function as a Python object, and strict mode would refuse a Python
    str, so the parse inside is lax (`Strict(False)`). Whatever it refuses is judged as strict
    mode judged it from JSON, so every error given before stays word for word; only text
    strict mode took and RFC 3339 does not is refused here (on the error path only: an event
    with an RFC 3339 time costs one regex match more)."""
    if isinstance(value, datetime):  # built in Python (the SDK)
        return _occurred_at(handler(value))
    if info.mode == "python":  # strict: a datetime only, as before
        raise PydanticCustomError("datetime_type", "Input should be a valid datetime")
    if type(value) is str and _OCCURRED_AT_TEXT.match(value):
        try:
            parsed: datetime = handler(value)
        except ValidationError:
            _strict_refusal(value)
            raise
        return _occurred_at(parsed)
    _strict_refusal(value)
    _occurred_at(handler(value))  # its errors first (timezone, range), as before
    raise ValueError(
        "occurred_at must be an RFC 3339 date-time: YYYY-MM-DDTHH:MM:SS[.fraction] followed by "
        "Z or +hh:mm / -hh:mm"
    )


OccurredAt = Annotated[
    datetime,
    Strict(False),  # the text reaches it as a Python str: see `_rfc3339`
    WrapValidator(_rfc3339),  # and the range (`_occurred_at`), in the same call
    Field(description=OCCURRED_AT_DESCRIPTION, json_schema_extra={"pattern": OCCURRED_AT_PATTERN}),
]


def _as_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)  # aware and within 2000-2199: cannot overflow


OCCURRED_AT_FROM_JSON = core_schema.no_info_after_validator_function(
    _as_utc,
    core_schema.chain_schema(
        [
            core_schema.str_schema(pattern=OCCURRED_AT_PATTERN),
            core_schema.datetime_schema(strict=False, ge=OCCURRED_AT_MIN, lt=OCCURRED_AT_END),
        ]
    ),
)
"""What `_rfc3339` accepts from JSON, and the same UTC datetime, with the pattern, the parse and
the range compiled in pydantic-core instead of a Python call around the parser (1.9 instead of
3.1 µs per event). For validators that only decide acceptance (the sink's plain validator asks
the models for every refusal's wording); the two are checked equal over the timestamp edges and
the mutation corpus (`tests/unit/sink/test_plain_validator.py`)."""

JSON_EQUIVALENTS: dict[object, core_schema.CoreSchema] = {_rfc3339: OCCURRED_AT_FROM_JSON}
"""Python validators of the contract → a compiled core schema accepting exactly what they accept
from JSON (`agentaudit.sink.plain_validator` substitutes them)."""


def _check_attributes(value: dict[str, AttributeValue]) -> dict[str, AttributeValue]:
    if len(value) > MAX_ATTRIBUTES:
        raise ValueError(f"at most {MAX_ATTRIBUTES} attributes, got {len(value)}")
    for key in value:
        if not key or len(key) > MAX_ATTRIBUTE_KEY:
            raise ValueError(f"attribute keys must be 1..{MAX_ATTRIBUTE_KEY} chars: {key[:80]!r}")
    return value


Attributes = Annotated[dict[str, AttributeValue], AfterValidator(_check_attributes)]


class StrictModel(BaseModel):
    """Base of every contract model: strict types, unknown fields rejected, immutable."""

    # allow_inf_nan=False: NaN/Infinity are not JSON; accepted, they would be written to the
    # canonical bytes as null, which no longer validate and lose the value from the trail.
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)


class Sdk(StrictModel):
    name: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    version: Annotated[str, StringConstraints(min_length=1, max_length=32)]


class Envelope(StrictModel):
    """Fields common to every event type. `type` and `payload` are added by each event model."""

    event_id: EventId
    schema_version: int = Field(default=SCHEMA_VERSION, ge=1, le=SCHEMA_VERSION)
    occurred_at: OccurredAt
    sdk: Sdk
    tenant_id: TenantId
    user_id: OpaqueId | None = None
    agent_id: Slug
    agent_version: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    deployment: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")] = "prod"
    variant: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None
    session_id: OpaqueId | None = None
    run_id: OpaqueId | None = None
    trace_id: TraceId
    span_id: SpanId
    parent_span_id: SpanId | None = None
    attributes: Attributes = Field(default_factory=dict)
