"""Spans made by the real OpenTelemetry SDK, encoded as the real exporter encodes them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

RESOURCE = {"service.name": "support-bot", "service.version": "1.2.0"}

Spec = tuple[str, Mapping[str, Any], Sequence["Spec"]] | tuple[str, Mapping[str, Any]]


def make_spans(
    *tree: Spec, resource: Mapping[str, Any] = RESOURCE, error: str = ""
) -> list[ReadableSpan]:
    """Finished SDK spans of `tree`: (name, attributes[, children]); spans named in `error`
    end with status ERROR."""
    mem = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create(dict(resource)))
    provider.add_span_processor(SimpleSpanProcessor(mem))
    tracer = provider.get_tracer("tests.otlp", "0.1")

    def run(spec: Spec) -> None:
        name, attributes = spec[0], spec[1]
        with tracer.start_as_current_span(name, attributes=dict(attributes)) as span:
            for child in spec[2] if len(spec) > 2 else ():  # type: ignore[misc]
                run(child)
            if name == error:
                span.set_status(Status(StatusCode.ERROR, "boom"))

    for spec in tree:
        run(spec)
    provider.shutdown()
    return list(mem.get_finished_spans())


def request(*tree: Spec, **kw: Any) -> ExportTraceServiceRequest:
    return encode_spans(make_spans(*tree, **kw))


def chat(model: str = "gpt-4o-mini", **usage: int) -> Spec:
    a: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": model,
        "gen_ai.response.model": model + "-2024-07-18",
    }
    a.update({f"gen_ai.usage.{k}": v for k, v in usage.items()})
    return (f"chat {model}", a)
