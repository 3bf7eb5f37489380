"""What the background thread does to each queued record: build the event dict from the
record and the bound context, redact content fields, validate against the contract and
serialise to wire bytes. Pure functions plus one small class; no I/O, no threads.

Validation goes through the wire form (`parse_event` on JSON), the exact path the sink takes:
the contract models are strict, and strict Python-mode validation rejects plain strings for
enum fields ("completed" for `StopReason`), which is how agents naturally write them.
Redaction runs before validation so the size caps are checked on the text that actually
leaves the process, and validation errors never echo unredacted input.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
import uuid_utils
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails, InitErrorDetails

from agentaudit_schemas.events import MAX_EVENT_BYTES, parse_event
from agentaudit_schemas.payloads import MAX_CONTENT_CHARS
from agentaudit_sdk.clock import utc_from_ns
from agentaudit_sdk.context import Bound, new_span_id, new_trace_id
from agentaudit_sdk.redaction import redact
from agentaudit_sdk.version import __version__

SDK_INFO = {"name": "agentaudit-python", "version": __version__}
STEP_TYPES = frozenset({"llm_call", "tool_call"})
"""Event types counted as steps of the enclosing run."""

QueuedEmit = tuple[str, Mapping[str, Any], Bound, dict[str, Any], uuid_utils.UUID, int]
"""What `emit` queues: (type, payload, bound context, envelope overrides, event id, epoch ns)."""
WireRecord = tuple[bytes, bytes]
"""(Kafka key = tenant_id UTF-8, value = event JSON)."""


class InvalidEvent(ValueError):
    """An event the SDK refuses to send (the reason is the message)."""


def _json_default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _redact_str(value: Any) -> tuple[Any, bool]:
    if not isinstance(value, str):
        return value, False
    result = redact(value)
    return result.text, result.changed


_LABELLED = {
    "policy_decision": ("action", "resource", "reason"),
    "tool_call": ("action",),
    "approval_requested": ("action",),
}
"""Free-text labels per event type, redacted like error messages."""


def redact_event(data: dict[str, Any]) -> dict[str, Any]:
    """Redact llm_call prompt/response, error message, the free-text labels of policy
    decisions, tool calls and approval requests, and string attributes in `data`.

    Copy-on-write below the top level: the payload dicts may be the caller's own objects.
    Encrypted content is left alone (redacting ciphertext only corrupts it).
    """
    payload = data.get("payload")
    if isinstance(payload, BaseModel):
        payload = payload.model_dump()
    kind = data.get("type")
    if kind == "llm_call" and isinstance(payload, Mapping):
        content = payload.get("content")
        if isinstance(content, BaseModel):
            content = content.model_dump()
        if isinstance(content, Mapping) and content.get("handling") != "encrypted":
            new = dict(content)
            changed = False
            for key in ("prompt", "response"):
                new[key], hit = _redact_str(new.get(key))
                changed |= hit
            if changed:
                new["handling"] = "redacted"
                data["payload"] = {**payload, "content": new}
    elif kind == "error" and isinstance(payload, Mapping):
        message, hit = _redact_str(payload.get("message"))
        if hit:
            data["payload"] = {**payload, "message": message}
    elif kind in _LABELLED and isinstance(payload, Mapping):
        # free text the agent writes: a resource is often a URL ("...?api_key=..."), a reason
        # quotes the request; they went out unredacted
        new_labels = {}
        for key in _LABELLED[kind]:
            value, hit = _redact_str(payload.get(key))
            if hit:
                new_labels[key] = value
        if new_labels:
            data["payload"] = {**payload, **new_labels}
    attributes = data.get("attributes")
    if isinstance(attributes, Mapping):
        data["attributes"] = {key: _redact_str(value)[0] for key, value in attributes.items()}
    return data


CONTENT_OMITTED = "agentaudit.content_omitted"
"""The attribute naming an llm_call's prompt or response left out for its length."""


def omit_oversized_content(data: dict[str, Any]) -> dict[str, Any]:
    """Leave out an llm_call's prompt or response longer than the contract's
    `MAX_CONTENT_CHARS` and name it in the attribute `agentaudit.content_omitted`; never cut
    (a cut text would read as the whole). The call, its usage and cost are kept. Before, the
    whole event failed the contract: a RAG-sized prompt cost the call's spend record (counted
    in `stats.invalid`, nothing on the topic). The OTLP receiver does the same
    (`otlp.content_omitted`)."""
    payload = data.get("payload")
    if data.get("type") != "llm_call":
        return data
    if isinstance(payload, BaseModel):
        payload = payload.model_dump()
    content = payload.get("content") if isinstance(payload, Mapping) else None
    if isinstance(content, BaseModel):
        content = content.model_dump()
    if not isinstance(payload, Mapping) or not isinstance(content, Mapping):
        return data
    long = [
        key
        for key in ("prompt", "response")
        if isinstance(content.get(key), str) and len(content[key]) > MAX_CONTENT_CHARS
    ]
    if not long:
        return data
    kept = {key: value for key, value in content.items() if key not in long}
    data["payload"] = {**payload, "content": kept}
    attributes = data.get("attributes")
    data["attributes"] = {
        **(attributes if isinstance(attributes, Mapping) else {}),
        CONTENT_OMITTED: ", ".join(f"{key} over {MAX_CONTENT_CHARS} chars" for key in long),
    }
    return data


def without_input(exc: ValidationError) -> ValidationError | InvalidEvent:
    """`exc` without the input values: a ValidationError's text shows each failing value
    (its first and last characters when long), and the client logs it and keeps it in
    `recent_errors`. A field that redaction does not reach (a prompt given as a list of
    messages, a nested attribute, a label) may hold a secret there, e.g. the tail of an
    API key. Locations, error types and limits stay, so the reason is still readable."""
    details = exc.errors(include_url=False, include_input=False)
    try:
        return ValidationError.from_exception_data(
            exc.title,
            [_detail(d) for d in details],
            input_type="json",
            hide_input=True,
        )
    except Exception:  # noqa: BLE001 - an error type pydantic cannot rebuild: plain text then
        return InvalidEvent(
            "; ".join(f"{'.'.join(map(str, d['loc']))}: {d['msg']}" for d in details)
        )


def _detail(error: ErrorDetails) -> InitErrorDetails:
    detail = InitErrorDetails(type=error["type"], loc=error["loc"], input=None)
    if "ctx" in error:
        detail["ctx"] = error["ctx"]
    return detail


class EventEncoder:
    """QueuedEmit → (key, wire bytes); raises ValidationError, InvalidEvent or TypeError."""

    def __init__(self, defaults: Mapping[str, Any], *, redact: bool = True) -> None:
        self._defaults = {key: value for key, value in defaults.items() if value is not None}
        self._defaults["sdk"] = SDK_INFO
        self._redact = redact

    def event_dict(self, record: QueuedEmit) -> dict[str, Any]:
        """Client defaults < bound context < per-call overrides; ids and trace filled in."""
        kind, payload, bound, envelope, event_id, ns = record
        data = {**self._defaults, **bound.fields, **envelope}
        if "attributes" in envelope and "attributes" in bound.fields:
            data["attributes"] = {**bound.fields["attributes"], **envelope["attributes"]}
        data["event_id"] = str(event_id)
        data["occurred_at"] = utc_from_ns(ns)
        data["type"] = kind
        data["payload"] = payload
        # A point event is a leaf span under the enclosing one; scopes pass their own ids.
        data["trace_id"] = envelope.get("trace_id") or bound.trace_id or new_trace_id()
        data["span_id"] = envelope.get("span_id") or new_span_id()
        if "parent_span_id" not in envelope:
            data["parent_span_id"] = bound.span_id
        return data

    def encode(self, item: QueuedEmit | BaseModel) -> WireRecord:
        data = item.model_dump() if isinstance(item, BaseModel) else self.event_dict(item)
        if self._redact:
            data = redact_event(data)
        data = omit_oversized_content(data)  # after redaction, which changes lengths
        try:
            event = parse_event(orjson.dumps(data, default=_json_default))
        except ValidationError as exc:
            raise without_input(exc) from None
        wire = event.model_dump_json(exclude_none=True).encode()
        if len(wire) > MAX_EVENT_BYTES:
            raise InvalidEvent(
                f"{data.get('type')} event {data.get('event_id')} is {len(wire)} bytes, "
                f"over MAX_EVENT_BYTES={MAX_EVENT_BYTES}"
            )
        return event.tenant_id.encode(), wire
