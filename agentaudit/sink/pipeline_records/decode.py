"""Turn one message of the alerts or control topic into a record, a dead letter, or nothing.

Pure and deterministic, like `agentaudit.sink.decode`: the same bytes always give the same
verdict, which replay after a crash relies on (a replayed message must land in the same
table). On the alerts topic the record kind is the `record` field (a pydantic discriminated
union over the models of `schemas/records.py`). The control topic is read as the SDK's kill
switch reads it (`agentaudit_sdk.control.decode_control_value`: a heartbeat by its key, a
control message with the fields this version does not know dropped): the trail must hold
every block the agents obey, and nothing they refused. Reasons reuse the event sink's codes,
classified from pydantic's error type codes and locations, never from message text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import orjson
from pydantic import Field, TypeAdapter, ValidationError

from agentaudit.sink.decode import Reason, Rejected, _detail  # one wording for both sinks
from agentaudit.sink.pipeline_records.rows import Record
from agentaudit_schemas.events import MAX_EVENT_BYTES
from agentaudit_schemas.records import (
    HEARTBEAT_KEY_PREFIX,
    Alert,
    BreakerTransition,
    DriftScore,
)
from agentaudit_sdk.control import InvalidRecord, decode_control_value

MAX_RECORD_BYTES = MAX_EVENT_BYTES
_ADAPTER: TypeAdapter[Alert | BreakerTransition | DriftScore] = TypeAdapter(
    Annotated[Alert | BreakerTransition | DriftScore, Field(discriminator="record")]
)
"""The alerts topic's kinds. A control message or heartbeat there is a dead letter
(`unknown_type`): no agent reads it, so a control row of it would be a block nobody obeyed,
shown in force on the dashboards and published by `restore-blocks`."""
_TAG_ERRORS = {"union_tag_invalid", "union_tag_not_found"}
_NOT_OBJECT = {"dict_type", "model_type"}
"""JSON that is not an object: the union's error, one model's error."""
_ID_FIELDS = ("alert_id", "control_id", "transition_id", "score_id", "heartbeat_id")


@dataclass(frozen=True, slots=True)
class Parsed:
    record: Record
    raw: bytes


@dataclass(frozen=True, slots=True)
class Tombstone:
    """An empty value: a compacted topic's deletion marker, not a record and not an error."""


TOMBSTONE = Tombstone()


def _tenant_error(loc: tuple[int | str, ...], tagged: bool) -> bool:
    # ('drift_score', 'tenant_id') or ('alert', 'scope', 'tenant_id', <union branch>); one
    # model's errors (`tagged` False) have no union tag first
    loc = loc[1:] if tagged else loc
    return loc[:1] == ("tenant_id",) or loc[:2] == ("scope", "tenant_id")


def _classify(exc: ValidationError, tagged: bool = True) -> Reason:
    errors = exc.errors(include_url=False, include_input=False)
    kinds = {e["type"] for e in errors}
    if "json_invalid" in kinds or any(e["type"] in _NOT_OBJECT and not e["loc"] for e in errors):
        return Reason.INVALID_JSON  # not JSON, or JSON that is not an object
    if kinds & _TAG_ERRORS:
        return Reason.UNKNOWN_TYPE  # no `record` field, or one this sink does not know
    if not tagged and any(e["loc"] == ("record",) for e in errors):
        return Reason.UNKNOWN_TYPE  # another kind of record where one kind is read
    tenant = [e for e in errors if _tenant_error(e["loc"], tagged)]
    if tenant:
        return Reason.MISSING_TENANT if tenant[0]["type"] == "missing" else Reason.INVALID_TENANT
    return Reason.SCHEMA_VIOLATION


def decode_record(value: bytes | None) -> Parsed | Rejected | Tombstone:
    """Validate one message value of the alerts topic; never raises."""
    if not value:
        return TOMBSTONE
    if len(value) > MAX_RECORD_BYTES:
        return Rejected(Reason.OVERSIZED, f"{len(value)} bytes > limit {MAX_RECORD_BYTES}")
    try:
        record = _ADAPTER.validate_json(value)
    except ValidationError as exc:
        return Rejected(_classify(exc), _detail(exc))
    except Exception as exc:  # noqa: BLE001 - a validator's own error: a dead letter, not a crash loop
        # pydantic wraps only ValueError: a timestamp whose UTC is outside years 1-9999
        # ("0001-01-01T00:30:00+01:00") raises OverflowError from `astimezone`.
        return Rejected(Reason.SCHEMA_VIOLATION, f"{type(exc).__name__}: {exc}"[:2000])
    return Parsed(record, value)


def decode_control_record(key: bytes | None, value: bytes | None) -> Parsed | Rejected | Tombstone:
    """Read one message of the control topic as the SDK does (module doc); never raises.

    No size limit: the SDK obeys a block of any size, so the trail must hold it (the topic's
    own limit bounds it)."""
    if not value:
        return TOMBSTONE
    try:
        record = decode_control_value(key, value)
    except InvalidRecord as exc:
        cause = exc.__cause__
        if isinstance(cause, ValidationError):
            return Rejected(_classify(cause, tagged=False), _detail(cause))
        return Rejected(Reason.SCHEMA_VIOLATION, str(exc)[:2000])
    except Exception as exc:  # noqa: BLE001 - as in `decode_record`: a dead letter, not a crash loop
        return Rejected(Reason.SCHEMA_VIOLATION, f"{type(exc).__name__}: {exc}"[:2000])
    return Parsed(record, value)


def hints(value: bytes | None, key: bytes | None) -> tuple[str, str]:
    """Best-effort tenant and record id of a rejected message, for its dead-letter row."""
    # Control messages are keyed by `Scope.key` ("tenant=acme/agent=x"), alerts by tenant;
    # a heartbeat's key ("heartbeat/stream_jobs") names no tenant.
    text = (key or b"")[:256].decode("utf-8", "replace")
    tenant = "" if text.startswith(HEARTBEAT_KEY_PREFIX) else text.removeprefix("tenant=")
    tenant = tenant.split("/")[0][:64]
    if value is not None and len(value) > MAX_RECORD_BYTES:
        return tenant, ""  # not parsed: megabytes of JSON on the consumer's loop
    try:
        doc: Any = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return tenant, ""
    if not isinstance(doc, dict):
        return tenant, ""
    scope = doc.get("scope")
    for candidate in (
        doc.get("tenant_id"),
        scope.get("tenant_id") if isinstance(scope, dict) else None,
    ):
        if isinstance(candidate, str):
            tenant = candidate[:64]
            break
    ids = [doc[f] for f in _ID_FIELDS if isinstance(doc.get(f), str)]
    return tenant, (ids[0][:64] if ids else "")
