"""Request bodies to OTLP request messages: protobuf or OTLP/JSON, gzip or not.

OTLP/JSON is not protobuf's canonical JSON: trace and span ids are **hex** strings, where
protobuf's JSON mapping expects base64 for `bytes` fields. Hex text is also valid base64, so
`json_format.Parse` accepts a spec body without error and decodes a 16-byte trace id into 24
wrong bytes. `_hex_ids` rewrites the id fields to base64 before the generic parse, under
their lowerCamelCase names and under the snake_case ones `json_format` (and the Collector)
also accept; everything else (enums as integers or names, 64-bit integers as strings) is what
`json_format` already accepts. Unknown fields are ignored, as the OTLP spec asks of receivers.
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from collections.abc import Iterator
from functools import cache
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

PROTOBUF = "application/x-protobuf"
JSON = "application/json"

M = TypeVar("M", bound=Message)


class BadRequest(ValueError):
    """The body cannot be decoded: answered 400, which exporters do not retry."""


class TooLarge(ValueError):
    """The body (or what it inflates to) is over the limit: answered 413."""


class UnsupportedMediaType(ValueError):
    """Neither protobuf nor JSON: answered 415."""


def media_type(content_type: str | None) -> str:
    """`PROTOBUF` or `JSON` from a Content-Type header (parameters ignored); 415 otherwise."""
    base = (content_type or "").split(";", 1)[0].strip().lower()
    if base in (PROTOBUF, JSON):
        return base
    raise UnsupportedMediaType(f"Content-Type {content_type!r}: use {PROTOBUF} or {JSON}")


def inflate(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The body without its Content-Encoding (identity or gzip), at most `limit` bytes."""
    enc = (encoding or "identity").strip().lower()
    if enc in ("", "identity"):
        if len(body) > limit:
            raise TooLarge(f"body of {len(body)} bytes > {limit}")
        return body
    if enc != "gzip":
        raise UnsupportedMediaType(f"Content-Encoding {encoding!r}: use gzip or none")
    # A gzip body may be several members back to back (RFC 1952; Go's and Python's readers
    # take them all): each is inflated in turn, or the spans after the first member would be
    # dropped while the request is answered 200. Bounded: a gzip bomb stops at `limit` + 1.
    out = bytearray()
    rest = body
    while True:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out += inflater.decompress(rest, limit + 1 - len(out))
        except zlib.error as exc:
            raise BadRequest(f"gzip body does not inflate: {exc}") from None
        if len(out) > limit:
            raise TooLarge(f"gzip body inflates to more than {limit} bytes")
        if not inflater.eof:
            raise BadRequest("gzip body is truncated")
        rest = inflater.unused_data
        if not rest:
            return bytes(out)


def _spellings(camel: str) -> tuple[str, ...]:
    """`camel` and its snake_case form (once when they are the same: `spans`, `links`)."""
    snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in camel)
    return (camel, snake) if snake != camel else (camel,)


def _b64_of_hex(obj: dict[str, Any], camel: str, size: int) -> None:
    for field in _spellings(camel):
        _field_b64_of_hex(obj, field, size)


def _field_b64_of_hex(obj: dict[str, Any], field: str, size: int) -> None:
    text = obj.get(field)
    if text is None or text == "":
        return
    if not isinstance(text, str):
        raise BadRequest(f"{field} must be a hex string, got {type(text).__name__}")
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise BadRequest(
            f"{field} {text[:40]!r} is not hex (OTLP/JSON ids are hex, not base64)"
        ) from None
    if len(raw) != size:
        raise BadRequest(f"{field} {text[:40]!r} is {len(raw)} bytes, not {size}")
    obj[field] = base64.b64encode(raw).decode()


def _each(obj: Any, camel: str) -> list[Any]:
    """The list under `camel` and under its snake_case name (`json_format` takes both, as the
    Collector's OTLP/JSON reader does: ids under either name must be read as hex)."""
    out: list[Any] = []
    for key in _spellings(camel):
        items = obj.get(key) if isinstance(obj, dict) else None
        if items is None:
            continue
        if not isinstance(items, list):
            raise BadRequest(f"{key} must be a list")
        out += items
    return out


_RECORDS = {
    "traces": (("resourceSpans", "scopeSpans", "spans"), "a span"),
    "logs": (("resourceLogs", "scopeLogs", "logRecords"), "a log record"),
}
"""Per signal: the nesting from the request down to its records, and what a record is called."""


def _records(node: Any, path: tuple[str, ...]) -> Iterator[Any]:
    """The items at the end of `path`, in document order (each level checked as it is read)."""
    if not path:
        yield node
        return
    for child in _each(node, path[0]):
        yield from _records(child, path[1:])


def _b64_ids(obj: dict[str, Any]) -> None:
    _b64_of_hex(obj, "traceId", 16)
    _b64_of_hex(obj, "spanId", 8)


def _hex_ids(doc: Any, signal: str) -> None:
    """Rewrite OTLP/JSON hex ids in place to the base64 `json_format` expects."""
    if not isinstance(doc, dict):
        raise BadRequest("the JSON body must be an object")
    path, what = _RECORDS[signal]
    for record in _records(doc, path):
        if not isinstance(record, dict):
            raise BadRequest(f"{what} must be an object")
        _b64_ids(record)
        if signal == "traces":
            _b64_of_hex(record, "parentSpanId", 8)
            for link in _each(record, "links"):
                if isinstance(link, dict):
                    _b64_ids(link)


@cache
def _json_fields(descriptor: Descriptor) -> dict[str, FieldDescriptor]:
    """A message's fields by JSON name and by proto name (the two `json_format` reads)."""
    return {**{f.json_name: f for f in descriptor.fields}, **descriptor.fields_by_name}


def _one_spelling(obj: Any, descriptor: Descriptor) -> None:
    """BadRequest when an object of `obj` names one field twice, by its JSON name and by its
    proto name (`resourceSpans` and `resource_spans`): `json_format` keeps one of the two
    silently (its duplicate check compares the keys as written), so a list of spans was
    dropped from a request answered 200. The Collector's reader refuses it ("duplicate
    field"); so does this."""
    if not isinstance(obj, dict):
        return
    fields = _json_fields(descriptor)
    seen: dict[str, str] = {}
    for key, value in obj.items():
        field = fields.get(key)
        if field is None:
            continue
        if field.name in seen:
            raise BadRequest(
                f"{descriptor.name}.{field.name} given twice ({seen[field.name]}, {key})"
            )
        seen[field.name] = key
        if field.message_type is None or value is None:
            continue
        if field.is_repeated and isinstance(value, list):
            for item in value:
                _one_spelling(item, field.message_type)
        else:
            _one_spelling(value, field.message_type)


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refused when it repeats a name: a parser keeps one of the two values
    silently (orjson the last), so `{"resourceSpans": [A], "resourceSpans": [B]}` was read as
    B alone and answered 200. The Collector's reader refuses it ("duplicate field")."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise ValueError(f"name {name[:80]!r} given twice in one object")
            seen.add(name)
    return obj


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parse(message: M, body: bytes, media: str, signal: str) -> M:
    if media == PROTOBUF:
        try:
            message.ParseFromString(body)
        except (DecodeError, RecursionError) as exc:
            raise BadRequest(f"protobuf body does not decode: {exc}") from None
        return message
    try:
        doc = json.loads(body, object_pairs_hook=_object, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError too
        raise BadRequest(f"JSON body does not parse: {str(exc)[:500]}") from None
    _hex_ids(doc, signal)
    try:
        _one_spelling(doc, message.DESCRIPTOR)
        json_format.ParseDict(doc, message, ignore_unknown_fields=True)
    except (json_format.ParseError, binascii.Error, RecursionError, ValueError, TypeError) as exc:
        raise BadRequest(f"JSON body is not OTLP: {str(exc)[:500]}") from None
    return message


def traces(body: bytes, media: str) -> ExportTraceServiceRequest:
    """An `ExportTraceServiceRequest` from an inflated body; BadRequest when it is not one."""
    return _parse(ExportTraceServiceRequest(), body, media, "traces")


def logs(body: bytes, media: str) -> ExportLogsServiceRequest:
    """An `ExportLogsServiceRequest` from an inflated body; BadRequest when it is not one."""
    return _parse(ExportLogsServiceRequest(), body, media, "logs")


def encode(message: Message, media: str) -> bytes:
    """A response message in the request's encoding (OTLP answers in kind)."""
    if media == PROTOBUF:
        return message.SerializeToString()
    return json_format.MessageToJson(message, indent=None).encode()
