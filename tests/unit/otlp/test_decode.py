"""Request bodies: protobuf, the spec's OTLP/JSON (hex ids), gzip, and what is refused."""

from __future__ import annotations

import gzip

import orjson
import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from agentaudit.otlp import decode
from tests.unit.otlp.spans import chat, request


def spec_json(req: ExportTraceServiceRequest) -> dict:
    """The OTLP/JSON form: protobuf JSON with hex ids (what collectors and JS exporters send)."""
    doc = json_format.MessageToDict(req)
    for rs in doc["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for span in ss["spans"]:
                for f in ("traceId", "spanId", "parentSpanId"):
                    if f in span:
                        span[f] = __import__("base64").b64decode(span[f]).hex()
    return doc


def test_spec_json_hex_ids_decode_to_the_original_bytes() -> None:
    req = request(("agent", {"gen_ai.operation.name": "invoke_agent"}, [chat(input_tokens=5)]))
    body = orjson.dumps(spec_json(req))
    got = decode.traces(body, decode.JSON)
    want = [s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
    spans = [s for rs in got.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert [(s.trace_id, s.span_id, s.parent_span_id) for s in spans] == [
        (s.trace_id, s.span_id, s.parent_span_id) for s in want
    ]
    assert all(len(s.trace_id) == 16 and len(s.span_id) == 8 for s in spans)
    # The gotcha this guards against: protobuf's own JSON parser takes hex as base64, silently.
    naive = json_format.Parse(body, ExportTraceServiceRequest(), ignore_unknown_fields=True)
    assert len(naive.resource_spans[0].scope_spans[0].spans[0].trace_id) == 24


def test_json_enums_as_names_or_numbers_and_int64_as_strings() -> None:
    doc = {
        "resourceSpans": [
            {
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": "0af7651916cd43dd8448eb211c80319c",
                                "spanId": "b7ad6b7169203331",
                                "name": "chat",
                                "kind": "SPAN_KIND_CLIENT",
                                "startTimeUnixNano": "1700000000000000000",
                                "endTimeUnixNano": 1700000000500000000,
                                "status": {"code": 2},
                                "attributes": [
                                    {
                                        "key": "gen_ai.usage.input_tokens",
                                        "value": {"intValue": "42"},
                                    }
                                ],
                            }
                        ]
                    }
                ]
            }
        ]
    }
    span = decode.traces(orjson.dumps(doc), decode.JSON).resource_spans[0].scope_spans[0].spans[0]
    assert span.kind == 3 and span.status.code == 2
    assert span.start_time_unix_nano == 1700000000000000000
    assert span.attributes[0].value.int_value == 42


@pytest.mark.parametrize("bad_id", ["zz" * 16, "AAAAAAAAAAAAAAAAAAAAAA==", "ab" * 15])
def test_ids_that_are_not_hex_of_the_right_size_are_a_bad_request(bad_id: str) -> None:
    doc = {
        "resourceSpans": [
            {"scopeSpans": [{"spans": [{"traceId": bad_id, "spanId": "b7ad6b7169203331"}]}]}
        ]
    }
    with pytest.raises(decode.BadRequest):
        decode.traces(orjson.dumps(doc), decode.JSON)


def test_gzip_inflates_within_the_limit_and_a_bomb_is_too_large() -> None:
    body = request(chat(input_tokens=5)).SerializeToString()
    assert decode.inflate(gzip.compress(body), "gzip", 1 << 20) == body
    with pytest.raises(decode.TooLarge):
        decode.inflate(gzip.compress(b"\0" * (2 << 20)), "gzip", 1 << 20)
    with pytest.raises(decode.BadRequest):
        decode.inflate(b"not gzip", "gzip", 1 << 20)
    with pytest.raises(decode.BadRequest):
        decode.inflate(gzip.compress(body)[:-12], "gzip", 1 << 20)
    with pytest.raises(decode.UnsupportedMediaType):
        decode.inflate(body, "br", 1 << 20)
    with pytest.raises(decode.TooLarge):
        decode.inflate(body, None, len(body) - 1)  # the limit holds without gzip too


def test_undecodable_bodies_and_media_types() -> None:
    with pytest.raises(decode.BadRequest):
        decode.traces(b"\xff\xff\xff\xff", decode.PROTOBUF)
    with pytest.raises(decode.BadRequest):
        decode.traces(b"{not json", decode.JSON)
    with pytest.raises(decode.BadRequest):
        decode.traces(b'{"resourceSpans": 3}', decode.JSON)
    assert decode.media_type("application/json; charset=utf-8") == decode.JSON
    with pytest.raises(decode.UnsupportedMediaType):
        decode.media_type("text/plain")


TRACE, SPAN = "5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174"


def test_hex_ids_of_span_links_and_log_records_decode_too() -> None:
    link = {"traceId": TRACE, "spanId": SPAN}
    doc = {"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": TRACE, "links": [link]}]}]}]}
    span = decode.traces(orjson.dumps(doc), decode.JSON).resource_spans[0].scope_spans[0].spans[0]
    assert span.links[0].trace_id.hex() == TRACE and span.links[0].span_id.hex() == SPAN
    record = {"traceId": TRACE, "spanId": SPAN}
    doc = {"resourceLogs": [{"scopeLogs": [{"logRecords": [record]}]}]}
    got = decode.logs(orjson.dumps(doc), decode.JSON).resource_logs[0].scope_logs[0]
    assert got.log_records[0].trace_id.hex() == TRACE
    assert got.log_records[0].span_id.hex() == SPAN


@pytest.mark.parametrize(
    ("signal", "doc", "message"),
    [
        ("traces", {"resourceSpans": [{"scopeSpans": [{"spans": [3]}]}]}, "a span must be"),
        ("logs", {"resourceLogs": [{"scopeLogs": [{"logRecords": ["x"]}]}]}, "a log record must"),
        ("logs", {"resourceLogs": [{"scopeLogs": 7}]}, "scopeLogs must be a list"),
        ("traces", [1], "the JSON body must be an object"),
    ],
)
def test_records_that_are_not_objects_are_a_bad_request_naming_them(
    signal: str, doc: object, message: str
) -> None:
    parse = decode.traces if signal == "traces" else decode.logs
    with pytest.raises(decode.BadRequest, match=message):
        parse(orjson.dumps(doc), decode.JSON)


def test_gzip_of_several_members_inflates_whole_and_trailing_garbage_is_refused() -> None:
    # Concatenated members are one gzip body (RFC 1952): reading only the first dropped the
    # second member's spans while the request was answered 200.
    first = request(chat(input_tokens=1)).SerializeToString()
    second = request(chat(input_tokens=2), chat(input_tokens=3)).SerializeToString()
    body = decode.inflate(gzip.compress(first) + gzip.compress(second), "gzip", 1 << 20)
    spans = [
        s
        for rs in decode.traces(body, decode.PROTOBUF).resource_spans
        for ss in rs.scope_spans
        for s in ss.spans
    ]
    assert len(spans) == 3
    with pytest.raises(decode.BadRequest):
        decode.inflate(gzip.compress(first) + b"trailing garbage", "gzip", 1 << 20)
    with pytest.raises(decode.BadRequest):
        decode.inflate(gzip.compress(first) + gzip.compress(second)[:-12], "gzip", 1 << 20)
    # The limit holds for the members together, not each.
    member = gzip.compress(b"\0" * (600 << 10))
    with pytest.raises(decode.TooLarge):
        decode.inflate(member + member, "gzip", 1 << 20)


def _snake_keys(doc: object) -> object:
    if isinstance(doc, dict):
        return {
            "".join(f"_{c.lower()}" if c.isupper() else c for c in k): _snake_keys(v)
            for k, v in doc.items()
        }
    if isinstance(doc, list):
        return [_snake_keys(v) for v in doc]
    return doc


def test_snake_case_json_names_carry_hex_ids_too() -> None:
    # json_format (and the Collector) accept original field names: their hex ids were read
    # as base64 (24-byte trace ids) and every span was dead-lettered.
    req = request(("agent", {"gen_ai.operation.name": "invoke_agent"}, [chat(input_tokens=5)]))
    doc = spec_json(req)
    for rs in doc["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for span in ss["spans"]:
                span["links"] = [{"traceId": TRACE, "spanId": SPAN}]
    got = decode.traces(orjson.dumps(_snake_keys(doc)), decode.JSON)
    want = [s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
    spans = [s for rs in got.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert [(s.trace_id, s.span_id, s.parent_span_id) for s in spans] == [
        (s.trace_id, s.span_id, s.parent_span_id) for s in want
    ]
    assert all(s.links[0].trace_id.hex() == TRACE for s in spans)
    record = {"trace_id": TRACE, "span_id": SPAN}
    doc2 = {"resource_logs": [{"scope_logs": [{"log_records": [record]}]}]}
    rec = decode.logs(orjson.dumps(doc2), decode.JSON).resource_logs[0].scope_logs[0].log_records[0]
    assert (rec.trace_id.hex(), rec.span_id.hex()) == (TRACE, SPAN)


@pytest.mark.parametrize("level", ["request", "resource", "span"])
def test_a_field_under_both_its_json_and_proto_names_is_a_bad_request(level: str) -> None:
    # json_format compares keys as written: resourceSpans and resource_spans both set was
    # read as one of the two lists, the other dropped from a request answered 200 (measured:
    # 2 spans sent, 1 decoded). Ambiguous, so refused as the Collector refuses it.
    doc = spec_json(request(chat(input_tokens=1), chat(input_tokens=2)))
    rs = doc["resourceSpans"][0]
    first, second = rs["scopeSpans"][0]["spans"]
    if level == "request":
        doc["resource_spans"] = [{**rs, "scopeSpans": [{"spans": [second]}]}]
        rs["scopeSpans"][0]["spans"] = [first]
    elif level == "resource":
        rs["scope_spans"] = [{"spans": [second]}]
        rs["scopeSpans"][0]["spans"] = [first]
    else:
        first["span_id"] = second["spanId"]
    with pytest.raises(decode.BadRequest, match="given twice"):
        decode.traces(orjson.dumps(doc), decode.JSON)


def test_a_name_repeated_in_one_json_object_is_a_bad_request() -> None:
    # orjson kept the last of two values: two resourceSpans lists were read as the second
    # alone (measured: 2 spans sent, 1 decoded, answered 200).
    doc = spec_json(request(chat(input_tokens=1), chat(input_tokens=2)))
    rs = doc["resourceSpans"][0]
    first, second = rs["scopeSpans"][0]["spans"]
    one = orjson.dumps([{**rs, "scopeSpans": [{"spans": [first]}]}])
    two = orjson.dumps([{**rs, "scopeSpans": [{"spans": [second]}]}])
    body = b'{"resourceSpans": ' + one + b', "resourceSpans": ' + two + b"}"
    with pytest.raises(decode.BadRequest, match="given twice"):
        decode.traces(body, decode.JSON)
    assert len(decode.traces(b'{"resourceSpans": ' + one + b"}", decode.JSON).resource_spans) == 1
    for constant in (b"NaN", b"Infinity", b"-Infinity"):  # not JSON: refused as before
        with pytest.raises(decode.BadRequest):
            decode.traces(b'{"x": ' + constant + b"}", decode.JSON)
    with pytest.raises(decode.BadRequest):
        decode.traces(b"\xff\xfe{", decode.JSON)
