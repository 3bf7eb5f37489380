"""Turn one Kafka message into an accepted event or a dead letter with a reason code.

Pure and deterministic: the same bytes always give the same verdict, which the
exactly-once recovery relies on (a replayed message must land in the same table).
Reasons are classified from pydantic's error *type codes* and locations, never from
message text.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pydantic import ValidationError

from schemas.canonical import canonical_bytes
from schemas.envelope import Envelope
from schemas.events import MAX_EVENT_BYTES, parse_event


class Reason(StrEnum):
    OVERSIZED = "oversized"
    INVALID_JSON = "invalid_json"
    UNKNOWN_TYPE = "unknown_type"
    MISSING_TENANT = "missing_tenant"
    INVALID_TENANT = "invalid_tenant"
    SCHEMA_VIOLATION = "schema_violation"


@dataclass(frozen=True, slots=True)
class Accepted:
    event: Envelope
    canonical: bytes


@dataclass(frozen=True, slots=True)
class Rejected:
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


def decode(value: bytes | None) -> Accepted | Rejected:
    """Validate wire bytes; never raises."""
    if value is None:
        return Rejected(Reason.INVALID_JSON, "message has no value (tombstone)")
    if len(value) > MAX_EVENT_BYTES:
        return Rejected(Reason.OVERSIZED, f"{len(value)} bytes > limit {MAX_EVENT_BYTES}")
    try:
        event = parse_event(value)
    except ValidationError as exc:
        return Rejected(_classify(exc), _detail(exc))
    return Accepted(event, canonical_bytes(event))
