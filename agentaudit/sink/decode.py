"""Turn one Kafka message into an accepted event or a dead letter with a reason code.

Pure and deterministic: the same bytes (and the same record timestamp) always give the same
verdict, which the exactly-once recovery relies on (a replayed message must land in the
same table). Reasons are classified from pydantic's error *type codes* and locations, never
from message text. `decode` never raises: an exception nobody foresaw becomes a dead letter
(`unencodable`) rather than a crash loop on the same message.

Two validators, one contract: `decode` (the sink's hot path) first tries the plain validator
derived from the models (`agentaudit.sink.plain_validator`), which can only *accept*; when it
does not, the models themselves (`validate`, also what the stream jobs and OTLP use) give the
verdict, so every reason and error detail is theirs.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, NamedTuple

from pydantic import ValidationError
from pydantic_core import from_json

from agentaudit.sink.plain_validator import plain_event
from agentaudit_schemas.canonical import canonical_document, canonical_timestamp, document_bytes
from agentaudit_schemas.envelope import Envelope
from agentaudit_schemas.events import MAX_EVENT_BYTES, parse_event
from agentaudit_schemas.json_keys import model_key_count, repeated_key

log = logging.getLogger("agentaudit.sink")


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
    EVENT_ID_CONFLICT = "event_id_conflict"


# Named tuples, not frozen dataclasses: one verdict is built per message, three times cheaper.
class Accepted(NamedTuple):
    document: dict[str, Any]
    """The event as its canonical bytes encode it (no nulls, defaults filled, `occurred_at`
    formatted): what the sink seals, prices and chains."""
    canonical: bytes
    occurred_at: datetime


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


def _checks(
    value: bytes, keys: int, occurred_at: datetime, not_after_ms: float | None
) -> Rejected | None:
    """What the contract's validation cannot see: repeated keys, and `occurred_at` after the
    record's time + the allowed skew. `keys`: the distinct keys the producer wrote."""
    repeated = repeated_key(value, keys)
    if repeated is not None:
        return Rejected(Reason.DUPLICATE_KEY, f"{repeated[:200]}: key appears more than once")
    if not_after_ms is not None and occurred_at.timestamp() * 1000 > not_after_ms:
        return Rejected(
            Reason.OCCURRED_AT_IN_FUTURE,
            f"occurred_at: {occurred_at.isoformat()} is after the latest accepted "
            f"time {_iso_ms(not_after_ms)} (Kafka record timestamp + allowed clock skew)",
        )
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
    return _checks(value, model_key_count(event), event.occurred_at, not_after_ms) or event


def _iso_ms(ms: float) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def not_after(timestamp_ms: int | None, max_skew_ms: float) -> float | None:
    """The latest `occurred_at` accepted for a record with this Kafka timestamp (ms), or
    None when the record carries none (-1; some clients leave 0): then skew is not checked."""
    return timestamp_ms + max_skew_ms if timestamp_ms is not None and timestamp_ms > 0 else None


def _unforeseen(exc: Exception) -> Rejected:
    return Rejected(Reason.UNENCODABLE, f"{type(exc).__name__}: {exc}"[:_DETAIL_LIMIT])


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
        return _unforeseen(exc)


def _encoded(document: dict[str, Any], occurred_at: datetime) -> Accepted | Rejected:
    try:
        document["occurred_at"] = canonical_timestamp(occurred_at)
        return Accepted(document, document_bytes(document), occurred_at)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - valid but not storable: a dead letter, not a crash
        return _unforeseen(exc)


def _by_the_models(value: bytes | None, not_after_ms: float | None) -> Accepted | Rejected:
    verdict = validate(value, not_after_ms)
    if isinstance(verdict, Rejected):
        return verdict
    try:
        document = canonical_document(verdict)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - as in `_encoded`
        return _unforeseen(exc)
    return _encoded(document, verdict.occurred_at)


class Disagreements:
    """Events the plain validator did not accept and the models did: each one is a gap in the
    derivation (tests require none) that costs the slow path; logged once, counted."""

    count = 0


def _declined(value: bytes, not_after_ms: float | None, exc: Exception) -> Accepted | Rejected:
    verdict = _by_the_models(value, not_after_ms)
    if isinstance(verdict, Accepted):
        Disagreements.count += 1
        if Disagreements.count == 1:
            log.warning(
                "the plain validator declined an event the models accept (%s: %s); such events "
                "take the models' slower path (agentaudit.sink.plain_validator)",
                type(exc).__name__,
                str(exc)[:200],
            )
    return verdict


def decode(value: bytes | None, not_after_ms: float | None = None) -> Accepted | Rejected:
    """`validate`, and the document and canonical bytes of an accepted event; never raises."""
    if value is None or len(value) > MAX_EVENT_BYTES:
        return _by_the_models(value, not_after_ms)  # its reasons for these
    try:
        document, keys = plain_event(value)
        occurred_at = document["occurred_at"]
        rejected = _checks(value, keys, occurred_at, not_after_ms)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - not accepted here (mostly invalid): the models decide
        return _declined(value, not_after_ms, exc)
    return rejected or _encoded(document, occurred_at)
