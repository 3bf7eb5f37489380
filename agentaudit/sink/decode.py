"""Turn one Kafka message into an accepted event or a dead letter with a reason code.

Pure and deterministic: the same bytes (and the same record timestamp) always give the
same verdict, which the exactly-once recovery relies on (a replayed message must land in the
same table). Reasons are classified from pydantic's error *type codes* and locations, never
from message text. `decode` never raises: an exception nobody foresaw becomes a dead letter
(`unencodable`) rather than a crash loop on the same message.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import NamedTuple

from pydantic import ValidationError
from pydantic_core import from_json

from agentaudit_schemas.canonical import canonical_bytes
from agentaudit_schemas.envelope import Envelope
from agentaudit_schemas.events import MAX_EVENT_BYTES, parse_event
from agentaudit_schemas.json_keys import duplicate_key


class Reason(StrEnum):
    OVERSIZED = "oversized"
    INVALID_JSON = "invalid_json"
    UNKNOWN_TYPE = "unknown_type"
    MISSING_TENANT = "missing_tenant"
    INVALID_TENANT = "invalid_tenant"
    SCHEMA_VIOLATION = "schema_violation"
    DUPLICATE_KEY = "duplicate_key"
    OCCURRED_AT_IN_FUTURE = "occurred_at_in_future"
    UNENCODABLE = "unencodable"


# Named tuples, not frozen dataclasses: one verdict is built per message, three times cheaper.
class Accepted(NamedTuple):
    event: Envelope
    canonical: bytes


class Rejected(NamedTuple):
    reason: Reason
    detail: str


_TAG_ERRORS = {"union_tag_invalid", "union_tag_not_found"}
_DETAIL_LIMIT = 2_000


def _classify(exc: ValidationError) -> Reason:
    errors = exc.errors(include_url=False, include_input=False)
    kinds = {e["type"] for e in errors}
    if "json_invalid" in kinds or any(e["type"] == "dict_type" and not e["loc"] for e in errors):
        return Reason.INVALID_JSON  # not JSON at all, or JSON that is not an object
    for err in errors:
        loc = err["loc"]
        # Envelope fields sit right under the union tag: ('llm_call', 'tenant_id').
        if len(loc) == 2 and loc[1] == "tenant_id":
            return Reason.MISSING_TENANT if err["type"] == "missing" else Reason.INVALID_TENANT
    if kinds & _TAG_ERRORS:
        return Reason.UNKNOWN_TYPE
    return Reason.SCHEMA_VIOLATION


def _detail(exc: ValidationError) -> str:
    parts = [
        f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']} [{e['type']}]"
        for e in exc.errors(include_url=False, include_input=False)
    ]
    return "; ".join(parts)[:_DETAIL_LIMIT]


def _not_json_number(value: bytes) -> str | None:
    """Why `value` is not JSON when it uses NaN/Infinity literals, which the parser under
    pydantic reads as floats (a finite-number error would call them schema violations)."""
    if b"NaN" not in value and b"Infinity" not in value:
        return None
    try:
        from_json(value, allow_inf_nan=False)
    except ValueError as exc:
        return f"<root>: {exc} (NaN and Infinity are not JSON)"
    return None


def _validate(value: bytes, not_after_ms: float | None) -> Envelope | Rejected:
    try:
        event = parse_event(value)
    except ValidationError as exc:
        reason = _classify(exc)
        if reason is not Reason.INVALID_JSON:
            not_json = _not_json_number(value)
            if not_json:
                return Rejected(Reason.INVALID_JSON, not_json[:_DETAIL_LIMIT])
        return Rejected(reason, _detail(exc))
    repeated = duplicate_key(value, event)
    if repeated is not None:
        return Rejected(Reason.DUPLICATE_KEY, f"{repeated[:200]}: key appears more than once")
    if not_after_ms is not None and event.occurred_at.timestamp() * 1000 > not_after_ms:
        return Rejected(
            Reason.OCCURRED_AT_IN_FUTURE,
            f"occurred_at: {event.occurred_at.isoformat()} is after the latest accepted "
            f"time {_iso_ms(not_after_ms)} (Kafka record timestamp + allowed clock skew)",
        )
    return event


def _iso_ms(ms: float) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def not_after(timestamp_ms: int | None, max_skew_ms: float) -> float | None:
    """The latest `occurred_at` accepted for a record with this Kafka timestamp (ms), or
    None when the record carries none (-1; some clients leave 0): then skew is not checked."""
    return timestamp_ms + max_skew_ms if timestamp_ms is not None and timestamp_ms > 0 else None


def validate(value: bytes | None, not_after_ms: float | None = None) -> Envelope | Rejected:
    """The contract's verdict on wire bytes: the event, or why it is a dead letter; never raises.

    `not_after_ms`: the latest `occurred_at` accepted, in ms since the epoch (the Kafka
    record's timestamp plus the allowed clock skew); None skips that check. The stream jobs
    call this too, so they see exactly the events the trail holds.
    """
    if value is None:
        return Rejected(Reason.INVALID_JSON, "message has no value (tombstone)")
    if len(value) > MAX_EVENT_BYTES:
        return Rejected(Reason.OVERSIZED, f"{len(value)} bytes > limit {MAX_EVENT_BYTES}")
    try:
        return _validate(value, not_after_ms)
    except MemoryError:
        raise  # not a property of the message: a replay may succeed
    except Exception as exc:  # noqa: BLE001 - the point: no input may crash-loop the sink
        return Rejected(Reason.UNENCODABLE, f"{type(exc).__name__}: {exc}"[:_DETAIL_LIMIT])


def decode(value: bytes | None, not_after_ms: float | None = None) -> Accepted | Rejected:
    """`validate`, and the canonical bytes of an accepted event; never raises."""
    verdict = validate(value, not_after_ms)
    if isinstance(verdict, Rejected):
        return verdict
    try:
        return Accepted(verdict, canonical_bytes(verdict))
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - valid but not storable: a dead letter, not a crash
        return Rejected(Reason.UNENCODABLE, f"{type(exc).__name__}: {exc}"[:_DETAIL_LIMIT])
