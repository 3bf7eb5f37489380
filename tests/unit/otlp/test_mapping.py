"""GenAI spans and evaluation records to events: usage normalised, ids deterministic, the rest
dead-lettered with the sink's reasons."""

from __future__ import annotations

import orjson
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from agentaudit.errors import UserError
from agentaudit.otlp import ingest
from agentaudit.otlp.keys import Forbidden, KeyTable, Unauthorized, add_key, presented_key
from agentaudit_schemas.events import parse_event
from tests.unit.otlp.spans import chat, request


def events(out: ingest.Outcome) -> list[dict]:
    return [orjson.loads(v) for _k, v in out.events]


def by_type(out: ingest.Outcome) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for e in events(out):
        found.setdefault(e["type"], []).append(e)
    return found


def test_openai_usage_includes_cache_and_anthropic_style_counts_are_added() -> None:
    out = ingest.traces(
        "acme",
        request(
            chat(input_tokens=1000, output_tokens=50, **{"cache_read.input_tokens": 400}),
            # Anthropic's API count (uncached tail only) passed through: cache exceeds input.
            (
                "chat claude",
                {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.system": "anthropic",
                    "gen_ai.request.model": "claude-sonnet-4-5",
                    "gen_ai.usage.input_tokens": 2,
                    "gen_ai.usage.cache_read.input_tokens": 47105,
                    "gen_ai.usage.cache_creation.input_tokens": 1076,
                    "gen_ai.usage.output_tokens": 10,
                },
            ),
        ),
    )
    assert out.rejected == 0
    openai, claude = sorted(
        by_type(out)["llm_call"], key=lambda e: e["payload"]["provider"], reverse=True
    )
    assert openai["payload"]["usage"] == {
        "input_tokens": 1000,
        "output_tokens": 50,
        "cached_input_tokens": 400,
        "cache_write_tokens": 0,
        "reasoning_tokens": 0,
    }
    assert openai["payload"]["response_model"] == "gpt-4o-mini-2024-07-18"
    assert claude["payload"]["provider"] == "anthropic"  # from the older gen_ai.system
    assert claude["payload"]["usage"]["input_tokens"] == 2 + 47105 + 1076
    assert claude["payload"]["usage"]["cached_input_tokens"] == 47105


def test_agent_span_gives_a_run_and_its_own_usage_is_never_counted() -> None:
    agent = (
        "invoke_agent bot",
        {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": "bot",
            "gen_ai.usage.input_tokens": 999_999,
            "gen_ai.usage.output_tokens": 999_999,
        },
        [
            chat(input_tokens=100, output_tokens=10),
            chat(input_tokens=200, output_tokens=20),
            (
                "execute_tool search",
                {
                    "gen_ai.operation.name": "execute_tool",
                    "gen_ai.tool.name": "search",
                    "gen_ai.tool.call.id": "call_1",
                    "gen_ai.tool.call.arguments": '{"q": "x"}',
                },
            ),
        ],
    )
    out = ingest.traces("acme", request(agent))
    t = by_type(out)
    assert sorted(t) == ["llm_call", "run_finished", "run_started", "tool_call"]
    run_id = t["run_started"][0]["run_id"]
    assert {e["run_id"] for e in events(out)} == {run_id}
    assert sum(e["payload"]["usage"]["input_tokens"] for e in t["llm_call"]) == 300
    assert all("usage" not in e["payload"] for e in t["run_started"] + t["run_finished"])
    assert t["run_finished"][0]["payload"]["stop_reason"] == "completed"
    tool = t["tool_call"][0]["payload"]
    assert tool["tool"] == "search" and tool["idempotency_key"] == "call_1"
    assert tool["side_effect"] == "external" and len(tool["args_hash"]) == 64
    assert {e["agent_id"] for e in events(out)} == {"support-bot"}
    assert all(parse_event(v) for _k, v in out.events)


def test_errors_come_from_status_or_error_type() -> None:
    out = ingest.traces(
        "acme",
        request(
            ("chat gpt-4o", {**chat()[1], "error.type": "RateLimitError"}),
            ("chat failed", chat()[1]),
            error="chat failed",
        ),
    )
    calls = by_type(out)["llm_call"]
    assert [c["payload"]["status"] for c in calls] == ["error", "error"]
    assert sorted(c["payload"]["error_type"] for c in calls) == ["RateLimitError", "error"]


def test_event_ids_are_deterministic_uuid7_and_differ_by_tenant() -> None:
    req = request(("agent", {"gen_ai.operation.name": "invoke_agent"}, [chat(input_tokens=1)]))
    a, b = ingest.traces("acme", req), ingest.traces("acme", req)
    other = ingest.traces("globex", req)
    ids = [e["event_id"] for e in events(a)]
    assert ids == [e["event_id"] for e in events(b)] and len(set(ids)) == 3
    assert not set(ids) & {e["event_id"] for e in events(other)}
    assert all(i[14] == "7" and i[19] in "89ab" for i in ids)


def test_unmapped_spans_are_dead_letters_with_the_sinks_reasons() -> None:
    out = ingest.traces(
        "acme",
        request(
            ("GET /health", {"http.method": "GET"}),
            ("retrieval", {"gen_ai.operation.name": "retrieval"}),
            ("chat ?", {"gen_ai.operation.name": "chat"}),  # no model
            ("chat bad", {**chat()[1], "gen_ai.usage.input_tokens": "many"}),
            ("chat caps", {**chat()[1], "gen_ai.request.model": "has spaces in it"}),  # not a Slug
            chat(input_tokens=1),
        ),
    )
    assert out.items == 6 and out.rejected == 5 and len(out.events) == 1
    reasons = [dict(h)["reason"] for _k, _v, h in out.dead_letters]
    assert reasons == [
        b"unknown_type",
        b"unknown_type",
        b"schema_violation",
        b"schema_violation",
        b"schema_violation",
    ]
    assert all(
        k == b"acme" and dict(h)["source"] == b"otlp:/v1/traces" for k, _v, h in out.dead_letters
    )
    kept = orjson.loads(out.dead_letters[0][1])
    assert kept["item"]["name"] == "GET /health" and len(kept["item"]["traceId"]) == 32
    assert out.message() == "5 of 6 dead-lettered (3 schema_violation, 2 unknown_type)"


def _log(attrs: dict, event_name: str = "gen_ai.evaluation.result") -> ExportLogsServiceRequest:
    from google.protobuf import json_format

    kv = [
        {"key": k, "value": {"stringValue": v} if isinstance(v, str) else {"doubleValue": v}}
        for k, v in attrs.items()
    ]
    return json_format.ParseDict(
        {
            "resourceLogs": [
                {
                    "resource": {
                        "attributes": [
                            {"key": "service.name", "value": {"stringValue": "support-bot"}}
                        ]
                    },
                    "scopeLogs": [
                        {
                            "scope": {"name": "judge"},
                            "logRecords": [
                                {
                                    "timeUnixNano": "1790000000000000000",
                                    "eventName": event_name,
                                    "traceId": "AAECAwQFBgcICQoLDA0ODw==",
                                    "spanId": "AAECAwQFBgc=",
                                    "attributes": kv,
                                }
                            ],
                        }
                    ],
                }
            ]
        },
        ExportLogsServiceRequest(),
    )


def test_evaluation_events_become_eval_results_other_logs_dead_letters() -> None:
    out = ingest.logs(
        "acme",
        _log(
            {
                "gen_ai.evaluation.name": "relevance",
                "gen_ai.evaluation.score.value": 0.83,
                "gen_ai.evaluation.score.label": "relevant",
                "gen_ai.response.id": "chatcmpl-1",
            }
        ),
    )
    (e,) = events(out)
    assert e["type"] == "eval_result" and e["span_id"] == "0001020304050607"
    assert e["payload"] == {
        "gold_set_id": "otlp",
        "case_id": "chatcmpl-1",
        "metric": "relevance",
        "score": 0.83,
        "passed": True,
        "evaluator": "judge",
    }
    other = ingest.logs("acme", _log({"x": "y"}, event_name="app.log"))
    assert other.rejected == 1 and dict(other.dead_letters[0][2])["reason"] == b"unknown_type"
    unsure = ingest.logs(
        "acme", _log({"gen_ai.evaluation.name": "tone", "gen_ai.evaluation.score.label": "meh"})
    )
    assert dict(unsure.dead_letters[0][2])["reason"] == b"schema_violation"


def test_keys_file_stores_only_hashes_and_refuses_unknown_and_revoked(tmp_path) -> None:
    path = tmp_path / "otlp-keys.json"
    key = add_key(path, "acme", "collector")
    assert key not in path.read_text()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    table = KeyTable(path)
    assert table.tenant(presented_key(f"Bearer {key}", None)) == "acme"
    assert table.tenant(presented_key(None, key)) == "acme"
    for bad in (None, "wrong"):
        try:
            table.tenant(bad)
            raise AssertionError("accepted")
        except Unauthorized:
            pass
    doc = orjson.loads(path.read_bytes())
    doc["keys"][0]["revoked"] = True
    path.write_bytes(orjson.dumps(doc))
    import os

    os.utime(path, ns=(1, 1))  # a different mtime than the first read: re-read
    table.reload()
    try:
        table.tenant(key)
        raise AssertionError("revoked key accepted")
    except Forbidden:
        pass


def test_a_keys_file_that_no_longer_loads_keeps_the_keys_in_force(tmp_path, caplog) -> None:
    # Reloading raised on every request (answered 500, which exporters do not retry) from
    # the moment an operator's edit broke the file until it was fixed.
    path = tmp_path / "otlp-keys.json"
    key = add_key(path, "acme", "collector")
    table = KeyTable(path)
    good = path.read_bytes()
    for broken in (good[:-5], b'{"keys": [{"sha256": "nope", "tenant_id": "acme"}]}'):
        path.write_bytes(broken)
        table.reload()
        assert table.tenant(key) == "acme"
    assert "not reloaded, 1 keys kept" in caplog.text
    second = add_key(path.with_name("next.json"), "beta")
    doc = orjson.loads(good)
    doc["keys"] += orjson.loads(path.with_name("next.json").read_bytes())["keys"]
    path.write_bytes(orjson.dumps(doc))
    table.reload()
    assert (table.tenant(key), table.tenant(second)) == ("acme", "beta")
    path.write_bytes(b"{")
    with pytest.raises(UserError):
        KeyTable(path)  # at start, a bad file is an error the operator sees


def test_all_zero_ids_are_no_ids_so_records_never_share_an_event_id() -> None:
    # OTLP's all-zero id means "none". Taken as an id, every such record got one event id
    # per type (and metric): the sink kept the first and dropped the rest as copies.
    evals = _log({"gen_ai.evaluation.name": "tone", "gen_ai.evaluation.score.label": "pass"})
    records = evals.resource_logs[0].scope_logs[0].log_records
    records[0].trace_id, records[0].span_id = bytes(16), bytes(8)
    records[0].attributes.add(key="gen_ai.response.id").value.string_value = "resp-1"
    records.add().CopyFrom(records[0])
    records[1].attributes[-1].value.string_value = "resp-2"
    out = ingest.logs("acme", evals)
    docs = [orjson.loads(v) for _, v in out.events]
    assert len({d["event_id"] for d in docs}) == 2
    assert {d["trace_id"] for d in docs}.isdisjoint({"0" * 32})
    spans = request(chat(input_tokens=1), chat(input_tokens=2))
    for span in spans.resource_spans[0].scope_spans[0].spans:
        span.trace_id, span.span_id = bytes(16), bytes(8)
    out = ingest.traces("acme", spans)
    assert (len(out.events), out.rejected) == (0, 2)
    assert [dict(h)["reason"] for _, _, h in out.dead_letters] == [b"schema_violation"] * 2


def test_an_item_the_mapping_did_not_foresee_is_its_own_dead_letter() -> None:
    # Token counts are int64 each; their sum (input + cache reads + cache writes) went past
    # 64 bits and orjson raised: the request was answered 500 (not retried by exporters),
    # the valid span beside it lost with it, nothing counted.
    top = 2**63 - 1
    huge = chat(
        input_tokens=top, **{"cache_read.input_tokens": top, "cache_creation.input_tokens": top}
    )
    out = ingest.traces("acme", request(huge, chat(input_tokens=5)))
    assert (out.items, len(out.events), out.rejected) == (2, 1, 1)
    headers = dict(out.dead_letters[0][2])
    assert headers["reason"] == b"unencodable"
    assert b"64-bit" in headers["detail"]
    assert orjson.loads(out.dead_letters[0][1])["item"]["name"] == "chat gpt-4o-mini"


def test_an_event_dated_after_not_after_is_dead_lettered_as_the_sink_would() -> None:
    # The sink's occurred_at_in_future check (record timestamp + max clock skew), made on
    # the receiver's side too: without it the span was answered 200 and lost at the sink.
    req = request(chat(input_tokens=1))
    span = req.resource_spans[0].scope_spans[0].spans[0]
    start_ms = span.start_time_unix_nano // 1_000_000
    assert len(ingest.traces("acme", req, not_after_ms=start_ms + 1).events) == 1
    late = ingest.traces("acme", req, not_after_ms=start_ms - 1)
    assert (len(late.events), late.rejected) == (0, 1)
    assert late.dead_letters[0][2][0] == ("reason", b"occurred_at_in_future")


def test_a_span_is_stored_whole_or_rejected_whole() -> None:
    # invoke_agent gives run_started (its start) and run_finished (its end): with the end
    # refused, run_started was still sent, a run that never finishes, while the response
    # said the span was dead-lettered.
    req = request(("invoke_agent a", {"gen_ai.operation.name": "invoke_agent"}))
    span = req.resource_spans[0].scope_spans[0].spans[0]
    span.start_time_unix_nano = 1_790_000_000_000_000_000  # pinned: a 10 s run
    span.end_time_unix_nano = span.start_time_unix_nano + 10 * 10**9
    out = ingest.traces("acme", req, not_after_ms=1_790_000_001_000)  # 1 s after its start
    assert (len(out.events), len(out.dead_letters), out.rejected) == (0, 2, 1)
    assert out.message() == "1 of 1 dead-lettered (1 occurred_at_in_future)"
    assert [dict(h)["reason"] for _, _, h in out.dead_letters] == [b"occurred_at_in_future"] * 2


def test_a_keys_file_missing_for_a_moment_keeps_the_keys_in_force(tmp_path, caplog) -> None:
    # A missing file dropped every key at once: while an editor moved it aside to write the
    # new one (or rm then mv), every exporter got 401, not retried, and its spans dropped.
    path = tmp_path / "otlp-keys.json"
    key = add_key(path, "acme", "collector")
    table = KeyTable(path)
    aside = path.with_name("otlp-keys.json~")
    path.rename(aside)
    table.reload()
    assert table.tenant(key) == "acme"
    assert "is missing, 1 keys kept in force" in caplog.text
    aside.rename(path)
    path.write_bytes(b'{"keys": []}')  # revoking every key is an explicit empty list
    table.reload()
    with pytest.raises(Unauthorized):
        table.tenant(key)
    assert len(KeyTable(tmp_path / "none.json")) == 0  # missing at start: no keys
