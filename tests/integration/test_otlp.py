"""OTLP ingest end to end: the real OpenTelemetry SDK and OTLP/HTTP exporter (and the real
openai-v2 instrumentation around the real `openai` client, against a local fake server) → the
receiver → the real broker → the real sink → chDB rows; status codes exporters act on."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiokafka import AIOKafkaConsumer
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentaudit.broker import ensure_topics, free_port
from agentaudit.otlp.keys import KeyTable, add_key
from agentaudit.otlp.server import RETRY_AFTER_BROKER_S, Receiver, serve_otlp
from agentaudit.settings import Settings
from agentaudit.store import open_store
from agentaudit.store.migrations import migrate
from tests.integration.helpers import assert_chains_valid, scalar, sink_until
from tests.unit.otlp.spans import chat, make_spans
from tests.unit.otlp.test_decode import spec_json

pytestmark = pytest.mark.integration

USAGE = {
    "prompt_tokens": 1200,
    "completion_tokens": 80,
    "total_tokens": 1280,
    "prompt_tokens_details": {"cached_tokens": 1000},
}
# gpt-4o-mini per 1M tokens: input 0.15, cached input 0.075, output 0.60 (hand calculation).
COST = (
    Decimal(200) * Decimal("0.15")
    + Decimal(1000) * Decimal("0.075")
    + Decimal(80) * Decimal("0.60")
) / 10**6
UNCACHED_COST = (Decimal(1200) * Decimal("0.15") + Decimal(80) * Decimal("0.60")) / 10**6


def _text(value: str | bytes) -> str:
    """A FixedString id column as text (the store returns bytes)."""
    return value.decode() if isinstance(value, bytes) else value


@asynccontextmanager
async def receiver(settings: Settings, tmp_path: Path) -> AsyncIterator[tuple[str, str, Receiver]]:
    """A receiver on a free port with one key of tenant `acme`: (base URL, key, receiver)."""
    keys = tmp_path / "otlp-keys.json"
    key = add_key(keys, "acme", "test")
    stop, ready = asyncio.Event(), asyncio.Event()
    port, box = free_port(), []

    def on_ready(r: Receiver, _port: int) -> None:
        box.append(r)
        ready.set()

    task = asyncio.create_task(
        serve_otlp(settings, stop, port=port, keys=KeyTable(keys), on_ready=on_ready)
    )
    await asyncio.wait_for(ready.wait(), 10)
    try:
        yield f"http://127.0.0.1:{port}", key, box[0]
    finally:
        stop.set()
        await task


@asynccontextmanager
async def fake_openai() -> AsyncIterator[str]:
    """A local OpenAI-compatible chat completions endpoint reporting cached prompt tokens."""

    async def completions(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 1790000000,
                "model": body["model"],
                "usage": USAGE,
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": "hello"},
                    }
                ],
            }
        )

    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        await runner.cleanup()


def _agent_run_spans() -> list[ReadableSpan]:
    """An agent run with the attributes the GenAI conventions (and openai-v2) put on spans:
    invoke_agent with an aggregate usage, a chat with cached tokens, a tool, a non-GenAI span."""
    return make_spans(
        (
            "invoke_agent support",
            {
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.name": "support",
                "gen_ai.usage.input_tokens": 99_999,
            },
            [  # an aggregate: must not be counted
                chat(input_tokens=1200, output_tokens=80, **{"cache_read.input_tokens": 1000}),
                (
                    "execute_tool lookup",
                    {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "lookup"},
                ),
                ("GET /internal", {}),
            ],
        )
    )


def _instrumented_agent_run(base_url: str) -> list[ReadableSpan]:
    """A real `openai` call instrumented by opentelemetry-instrumentation-openai-v2."""
    import openai
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

    mem = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": "support-bot", "service.version": "1.2.0"})
    )
    provider.add_span_processor(SimpleSpanProcessor(mem))
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        client = openai.OpenAI(base_url=base_url, api_key="sk-test", max_retries=0)
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
    finally:
        instrumentor.uninstrument()
        provider.shutdown()
    return list(mem.get_finished_spans())


def _export(url: str, key: str, spans: list[ReadableSpan]) -> SpanExportResult:
    exporter = OTLPSpanExporter(
        endpoint=f"{url}/v1/traces",
        headers={"Authorization": f"Bearer {key}"},
        compression=Compression.Gzip,
        timeout=10,
    )
    try:
        return exporter.export(spans)
    finally:
        exporter.shutdown()


async def _dlq(settings: Settings, n: int) -> list[dict[str, bytes]]:
    consumer = AIOKafkaConsumer(
        settings.dlq_topic,
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
    )
    await consumer.start()
    got: list[dict[str, bytes]] = []
    try:
        async with asyncio.timeout(20):
            while len(got) < n:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    got += [{**dict(r.headers), "value": r.value} for r in records]
    finally:
        await consumer.stop()
    return got


async def test_genai_spans_land_priced_once_and_unmapped_ones_are_dead_letters(
    settings: Settings, tmp_path: Path
) -> None:
    await ensure_topics(settings)
    spans = _agent_run_spans()
    json_spans = make_spans(
        (
            "invoke_agent json",
            {"gen_ai.operation.name": "invoke_agent"},
            [chat(input_tokens=10, output_tokens=2)],
        )
    )
    async with receiver(settings, tmp_path) as (url, key, rx):
        # protobuf + gzip through the real exporter, then the same batch again (a retry).
        assert await asyncio.to_thread(_export, url, key, spans) is SpanExportResult.SUCCESS
        assert await asyncio.to_thread(_export, url, key, spans) is SpanExportResult.SUCCESS
        # The Python exporter speaks only protobuf: the spec's JSON (hex ids) is sent by hand.
        body = gzip.compress(orjson.dumps(spec_json(encode_spans(json_spans))))
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{url}/v1/traces",
                data=body,
                headers={
                    "Content-Type": "application/json",
                    "Content-Encoding": "gzip",
                    "x-api-key": key,
                },
            ) as resp,
        ):
            assert resp.status == 200, await resp.text()
            assert await resp.json() == {}
        assert rx.counters["events"] == 2 * 4 + 3 and rx.counters["dead_letters"] == 2

    with open_store(settings, own=True) as store:
        migrate(store)
        worker = await sink_until(
            settings,
            store,
            lambda w: w.processor.counters.accepted + w.processor.counters.duplicates >= 11,
        )
        assert worker.processor.counters.accepted == 7 and worker.processor.counters.duplicates == 4
        rows = store.query(
            "SELECT type, trace_id, run_id, request_model, input_tokens, cached_input_tokens, "
            "output_tokens, cost_usd, priced FROM agentaudit.events WHERE tenant_id = 'acme' "
            "AND type = 'llm_call' ORDER BY input_tokens DESC"
        ).result_rows
        (_, trace, run, model, inp, cached, out, cost, priced), json_call = rows
        trace, run = _text(trace), _text(run)
        assert (model, inp, cached, out, priced) == ("gpt-4o-mini", 1200, 1000, 80, True)
        assert Decimal(json_call[7]) > 0 and json_call[4] == 10
        assert Decimal(cost) == COST
        assert trace == run == spans[0].context.trace_id.to_bytes(16, "big").hex()
        # The hand-sent JSON kept its hex ids: the row's trace id is the SDK's.
        assert _text(json_call[1]) == json_spans[0].context.trace_id.to_bytes(16, "big").hex()
        # Run usage = its inference spans only (the agent span's 99,999 is not in any row).
        assert (
            scalar(store, f"SELECT sum(input_tokens) FROM agentaudit.events WHERE run_id = '{run}'")
            == 1200
        )
        assert sorted(
            r[0]
            for r in store.query(
                f"SELECT type FROM agentaudit.events WHERE run_id = '{run}'"
            ).result_rows
        ) == ["llm_call", "run_finished", "run_started", "tool_call"]
        assert assert_chains_valid(store) == 7
    dead = await _dlq(settings, 2)
    assert [d["reason"] for d in dead] == [b"unknown_type"] * 2
    assert all(orjson.loads(d["value"])["item"]["name"] == "GET /internal" for d in dead)


async def test_status_codes_exporters_act_on(settings: Settings, tmp_path: Path) -> None:
    await ensure_topics(settings)
    small = settings.model_copy(update={"otlp_max_body_bytes": 4096})
    ok_body = encode_spans(make_spans(chat(input_tokens=1), ("GET /", {}))).SerializeToString()
    proto = {"Content-Type": "application/x-protobuf"}

    async with receiver(small, tmp_path) as (url, key, _rx), aiohttp.ClientSession() as http:

        async def post(data: bytes, **headers: str) -> tuple[int, Any, bytes]:
            async with http.post(f"{url}/v1/traces", data=data, headers=headers) as r:
                return r.status, r.headers, await r.read()

        auth = {"Authorization": f"Bearer {key}"}
        status, _h, body = await post(ok_body, **proto, **auth)
        assert status == 200
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceResponse,
        )

        resp = ExportTraceServiceResponse.FromString(body)
        assert resp.partial_success.rejected_spans == 1
        assert "unknown_type" in resp.partial_success.error_message
        assert (await post(ok_body, **proto))[0] == 401
        assert (await post(ok_body, **proto, Authorization="Bearer nope"))[0] == 401
        assert (await post(b"\xff\xff\xff", **proto, **auth))[0] == 400
        assert (await post(ok_body, **{"Content-Type": "text/plain"}, **auth))[0] == 415
        assert (await post(b"x" * 5000, **proto, **auth))[0] == 413
        bomb = gzip.compress(b"\0" * 100_000)
        assert (await post(bomb, **proto, **auth, **{"Content-Encoding": "gzip"}))[0] == 413

    # The broker does not answer: 503 with Retry-After (exporters retry), never 200.
    down = settings.model_copy(
        update={"kafka_bootstrap": f"127.0.0.1:{free_port()}", "otlp_send_timeout_s": 2.0}
    )
    async with receiver(down, tmp_path / "down") as (url, key, rx), aiohttp.ClientSession() as http:
        async with http.post(
            f"{url}/v1/traces", data=ok_body, headers={**proto, "x-api-key": key}
        ) as r:
            assert r.status == 503 and r.headers["Retry-After"] == str(RETRY_AFTER_BROKER_S)
        assert rx.counters["unavailable"] == 1 and rx.counters["events"] == 0


async def test_evaluation_log_events_land_as_eval_results(
    settings: Settings, tmp_path: Path
) -> None:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

    from tests.unit.otlp.test_mapping import _log

    await ensure_topics(settings)
    req = _log(
        {
            "gen_ai.evaluation.name": "relevance",
            "gen_ai.evaluation.score.value": 0.25,
            "gen_ai.evaluation.score.label": "fail",
        }
    )
    headers = {"Content-Type": "application/x-protobuf"}
    async with (
        receiver(settings, tmp_path) as (url, key, _rx),
        aiohttp.ClientSession() as http,
        http.post(
            f"{url}/v1/logs", data=req.SerializeToString(), headers={**headers, "x-api-key": key}
        ) as r,
    ):
        assert r.status == 200
        assert not ExportLogsServiceResponse.FromString(await r.read()).HasField("partial_success")
    with open_store(settings, own=True) as store:
        migrate(store)
        await sink_until(settings, store, lambda w: w.processor.counters.accepted >= 1)
        assert [
            (t, _text(s))
            for t, s in store.query("SELECT type, span_id FROM agentaudit.events").result_rows
        ] == [("eval_result", "0001020304050607")]


async def test_openai_v2_instrumentation_spans_land_with_usage_and_cost(
    settings: Settings, tmp_path: Path
) -> None:
    # openai-v2 2.4b0 puts no cache attribute on chat spans although the response reports
    # 1000 cached tokens (checked: the span has only gen_ai.usage.input/output_tokens), so
    # what lands is what the span says: 1200 input tokens at the full input price.
    await ensure_topics(settings)
    async with fake_openai() as base_url:
        spans = await asyncio.to_thread(_instrumented_agent_run, base_url)
    async with receiver(settings, tmp_path) as (url, key, _rx):
        assert await asyncio.to_thread(_export, url, key, spans) is SpanExportResult.SUCCESS
    with open_store(settings, own=True) as store:
        migrate(store)
        await sink_until(settings, store, lambda w: w.processor.counters.accepted >= 1)
        row = store.query(
            "SELECT request_model, input_tokens, cached_input_tokens, output_tokens, "
            "cost_usd FROM agentaudit.events WHERE type = 'llm_call'"
        ).result_rows
        assert [(m, i, c, o, Decimal(usd)) for m, i, c, o, usd in row] == [
            ("gpt-4o-mini", 1200, 0, 80, UNCACHED_COST)
        ]


async def test_a_span_dated_past_the_allowed_clock_skew_is_reported_rejected(
    settings: Settings, tmp_path: Path
) -> None:
    # The sink dead-letters an event dated more than max_clock_skew_s (900 s) after its
    # Kafka record's timestamp (occurred_at_in_future); the receiver judged events without
    # that check, so a span from a client whose clock runs an hour ahead was answered 200
    # with no partial_success, then dead-lettered by the sink: lost, and the exporter never
    # knew. Now it is judged on the records' own timestamp and reported rejected.
    import time

    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceResponse,
    )

    await ensure_topics(settings)
    req = encode_spans(make_spans(chat(input_tokens=1), chat(input_tokens=2)))
    ahead = req.resource_spans[0].scope_spans[0].spans[1]
    hour_ahead = time.time_ns() + 3600 * 10**9  # relative to this run's clock: no date pinned
    ahead.start_time_unix_nano, ahead.end_time_unix_nano = hour_ahead, hour_ahead + 10**9
    headers = {"Content-Type": "application/x-protobuf"}
    async with (
        receiver(settings, tmp_path) as (url, key, rx),
        aiohttp.ClientSession() as http,
        http.post(
            f"{url}/v1/traces", data=req.SerializeToString(), headers={**headers, "x-api-key": key}
        ) as r,
    ):
        assert r.status == 200
        partial = ExportTraceServiceResponse.FromString(await r.read()).partial_success
    assert partial.rejected_spans == 1 and "occurred_at_in_future" in partial.error_message
    assert rx.counters["events"] == 1 and rx.counters["dead_letters"] == 1
