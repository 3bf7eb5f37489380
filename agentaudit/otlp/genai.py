"""OpenTelemetry GenAI spans to our event documents (semantic conventions, `gen_ai.*`).

| `gen_ai.operation.name` | event(s) |
| --- | --- |
| `chat`, `text_completion`, `generate_content`, `embeddings` | `llm_call` |
| `execute_tool` | `tool_call` |
| `invoke_agent` | `run_started` (at the span's start) and `run_finished` (at its end) |
| anything else, or none | a dead letter (`unknown_type`) |

A span without `gen_ai.operation.name` is read as a tool call when it names a tool and as an
inference when it names a model (older instrumentations), else it is not a GenAI span.

Identity: `tenant_id` is the API key's (never an attribute's). `agent_id` is the resource's
`service.name` and `agent_version` its `service.version`, the same for every span of a
process, so a run and its calls share them (an agent name lives only on some spans); the
span's own `gen_ai.agent.name` is kept as an attribute. `run_id` is the trace id: every
GenAI span of one trace belongs to the run its `invoke_agent` span starts. A run's usage is
the sum of its inference spans' `llm_call`s; usage an instrumentation puts on the
`invoke_agent` span (an aggregate) is ignored, or it would be counted twice.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Any

from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from agentaudit.otlp import attrs as A
from agentaudit.otlp.ids import event_id, valid
from agentaudit_schemas.payloads import MAX_CONTENT_CHARS

INFERENCE = frozenset({"chat", "text_completion", "generate_content", "embeddings"})
TOOL = "execute_tool"
AGENT = "invoke_agent"
_PASSED_ON = frozenset(
    {
        "gen_ai.agent.name",
        "gen_ai.agent.version",
        "gen_ai.response.id",
        "gen_ai.conversation.id",
        "gen_ai.operation.name",
    }
)


@dataclass(frozen=True, slots=True)
class Origin:
    """What every event of one resource and scope shares: who sent it and with what."""

    tenant_id: str
    agent_id: str
    agent_version: str
    deployment: str | None
    sdk_name: str
    sdk_version: str
    user_id: Any = None


@dataclass(frozen=True, slots=True)
class Unmapped:
    """A span (or log record) that gives no event: `reason` is the sink's vocabulary."""

    reason: str
    detail: str


SHARED_CHARS = 1024
"""Resource values copied into every event are cut to this many characters, more than any
contract limit on them (so the verdict on an event is the same): a resource is sent once for
all its spans, and a megabyte `service.version` was copied into each span's event document."""


def _text(value: Any) -> str:
    return (value if isinstance(value, str) else str(value))[:SHARED_CHARS]


def origin(tenant: str, resource: dict[str, Any], scope_name: str, scope_version: str) -> Origin:
    """The shared identity of a resource's spans (see the module docstring)."""
    env = resource.get("deployment.environment.name", resource.get("deployment.environment"))
    user = resource.get("user.id", resource.get("enduser.id"))
    base = Origin(
        tenant_id=tenant,
        agent_id=A.slug(_text(resource.get("service.name") or ""), "unknown_service"),
        agent_version=_text(resource.get("service.version") or "unknown"),
        deployment=_text(env).lower() if env else None,
        sdk_name="",
        sdk_version="",
        user_id=_text(user) if user is not None else None,
    )
    return scoped(base, scope_name, scope_version)


def scoped(o: Origin, scope_name: str, scope_version: str) -> Origin:
    """`o` for the instrumentation scope `scope_name` `scope_version` (the event's sdk)."""
    return replace(o, sdk_name=(scope_name or "otlp")[:64], sdk_version=(scope_version or "0")[:32])


def operation(a: dict[str, Any]) -> str | None:
    """The span's GenAI operation, inferred for instrumentations that do not name it."""
    op = a.get("gen_ai.operation.name")
    if isinstance(op, str) and op:
        return op
    if "gen_ai.tool.name" in a or "gen_ai.tool.call.id" in a:
        return TOOL
    if "gen_ai.request.model" in a or "gen_ai.response.model" in a:
        return "chat"
    return None


def base_event(
    o: Origin, trace: str, span_id: str, type_: str, at_ns: int, id_key: str
) -> dict[str, Any]:
    """The fields every event from OTLP carries: its deterministic id (from the tenant,
    trace, span and `id_key`), type, time, origin and ids; the run is the trace."""
    return {
        "event_id": event_id(o.tenant_id, trace, span_id, id_key, at_ns // 1_000_000),
        "type": type_,
        "occurred_at": A.iso(at_ns),
        "sdk": {"name": o.sdk_name, "version": o.sdk_version},
        "tenant_id": o.tenant_id,
        "agent_id": o.agent_id,
        "agent_version": o.agent_version,
        "run_id": trace,
        "trace_id": trace,
        "span_id": span_id,
    }


def _envelope(o: Origin, span: Span, a: dict[str, Any], type_: str, at_ns: int) -> dict[str, Any]:
    trace, sid = span.trace_id.hex(), span.span_id.hex()
    doc = base_event(o, trace, sid, type_, at_ns, type_)
    if span.parent_span_id:
        doc["parent_span_id"] = span.parent_span_id.hex()
    if o.deployment:
        doc["deployment"] = o.deployment
    user = a.get("user.id", a.get("enduser.id", o.user_id))
    if user is not None:
        doc["user_id"] = str(user)
    session = a.get("gen_ai.conversation.id", a.get("session.id"))
    if session is not None:
        doc["session_id"] = str(session)
    extra = {"otlp.span_name": span.name} if span.name else {}
    for key in _PASSED_ON:
        v = a.get(key)
        if v is not None and not isinstance(v, list | dict | bytes):
            extra[key] = v
    # Attribute values are capped (256 chars) by the contract: a longer one is left out here,
    # named in otlp.omitted, rather than cut (a cut value would read as the whole).
    long = sorted(k for k, v in extra.items() if isinstance(v, str) and len(v) > 256)
    for k in long:
        del extra[k]
    if long:
        extra["otlp.omitted"] = ",".join(long)[:256]
    doc["attributes"] = extra
    return doc


def _failed(span: Span, a: dict[str, Any]) -> tuple[bool, str | None]:
    """(the call failed, its error type slug) from span status and `error.type`."""
    err = a.get("error.type")
    failed = span.status.code == Status.STATUS_CODE_ERROR or err is not None
    if not failed:
        return False, None
    return True, A.slug(str(err or "error"), "error")


def _latency_ms(span: Span) -> float:
    return max(span.end_time_unix_nano - span.start_time_unix_nano, 0) / 1e6


def usage(a: dict[str, Any]) -> dict[str, int]:
    """Token usage with our semantics: input includes cache reads and writes.

    The conventions say `gen_ai.usage.input_tokens` SHOULD include cached and cache-creation
    tokens (OpenAI's count does; Anthropic's API reports them beside it). An instrumentation
    that passed Anthropic's count through shows it: the cache counts exceed the input count.
    Then they are added. (When they do not exceed it, the two readings cannot be told apart;
    the conventions' reading is taken.) ValueError when a count is not a whole number.
    """
    inp = A.count(a, "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens") or 0
    out = A.count(a, "gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens") or 0
    read = (
        A.count(a, "gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_read_input_tokens")
        or 0
    )
    write = (
        A.count(
            a,
            "gen_ai.usage.cache_creation.input_tokens",
            "gen_ai.usage.cache_creation_input_tokens",
        )
        or 0
    )
    reasoning = A.count(a, "gen_ai.usage.reasoning.output_tokens") or 0
    if read + write > inp:
        inp += read + write
    # Reasoning is part of output by the conventions; an output below it cannot be that.
    if reasoning > out:
        out += reasoning
    return {
        "input_tokens": inp,
        "output_tokens": out,
        "cached_input_tokens": read,
        "cache_write_tokens": write,
        "reasoning_tokens": reasoning,
    }


def _content(a: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any] | None:
    prompt, response = a.get("gen_ai.input.messages"), a.get("gen_ai.output.messages")
    fits: dict[str, Any] = {}
    for name, v in (("prompt", prompt), ("response", response)):
        if isinstance(v, str) and v:
            if len(v) <= MAX_CONTENT_CHARS:
                fits[name] = v
            else:  # over the contract's cap: left out and said so, never cut
                doc["attributes"]["otlp.content_omitted"] = f"{name} over {MAX_CONTENT_CHARS} chars"
    return {"handling": "plain", **fits} if fits else None


def llm_call(o: Origin, span: Span, a: dict[str, Any]) -> dict[str, Any] | Unmapped:
    """An inference span as an `llm_call`."""
    model = a.get("gen_ai.request.model") or a.get("gen_ai.response.model")
    if not model:
        return Unmapped("schema_violation", "inference span without gen_ai.request.model")
    try:
        tokens = usage(a)
    except ValueError as exc:
        return Unmapped("schema_violation", str(exc))
    provider = a.get("gen_ai.provider.name") or a.get("gen_ai.system") or "unknown"
    doc = _envelope(o, span, a, "llm_call", span.start_time_unix_nano)
    failed, error_type = _failed(span, a)
    payload: dict[str, Any] = {
        "provider": A.slug(str(provider), "unknown"),
        "request_model": str(model),
        "usage": tokens,
        "latency_ms": _latency_ms(span),
        "status": "error" if failed else "ok",
    }
    if a.get("gen_ai.response.model"):
        payload["response_model"] = str(a["gen_ai.response.model"])
    if error_type:
        payload["error_type"] = error_type
    reasons = a.get("gen_ai.response.finish_reasons")
    if isinstance(reasons, list) and reasons and isinstance(reasons[0], str):
        payload["finish_reason"] = reasons[0]
    ttfc = a.get("gen_ai.response.time_to_first_chunk")
    if isinstance(ttfc, int | float) and not isinstance(ttfc, bool):
        payload["ttft_ms"] = float(ttfc) * 1000  # the convention's unit is seconds
    content = _content(a, doc)
    if content is not None:
        payload["content"] = content
    doc["payload"] = payload
    return doc


def tool_call(o: Origin, span: Span, a: dict[str, Any]) -> dict[str, Any]:
    """An `execute_tool` span as a `tool_call`: the arguments are kept only as their SHA-256.

    `side_effect` is `agentaudit.tool.side_effect` when the span sets it (read, write,
    external), else `external`: the conventions do not say, and unknown is not "read"."""
    name = str(a.get("gen_ai.tool.name") or span.name or "unknown")
    args = a.get("gen_ai.tool.call.arguments")
    doc = _envelope(o, span, a, "tool_call", span.start_time_unix_nano)
    failed, error_type = _failed(span, a)
    payload: dict[str, Any] = {
        "tool": A.slug(name, "unknown"),
        "action": name[:256],
        "args_hash": hashlib.sha256(str(args if args is not None else "").encode()).hexdigest(),
        "side_effect": str(a.get("agentaudit.tool.side_effect", "external")),
        "status": "error" if failed else "ok",
        "latency_ms": _latency_ms(span),
    }
    if a.get("gen_ai.tool.call.id") is not None:
        payload["idempotency_key"] = str(a["gen_ai.tool.call.id"])
    if error_type:
        payload["error_type"] = error_type
    doc["payload"] = payload
    return doc


def run_events(o: Origin, span: Span, a: dict[str, Any]) -> list[dict[str, Any]]:
    """An `invoke_agent` span as `run_started` and `run_finished` (steps unknown: 0)."""
    started = _envelope(o, span, a, "run_started", span.start_time_unix_nano)
    started["payload"] = {}
    finished = _envelope(o, span, a, "run_finished", span.end_time_unix_nano)
    failed, _ = _failed(span, a)
    finished["payload"] = {
        "stop_reason": "error" if failed else "completed",
        "steps": 0,
        "duration_ms": _latency_ms(span),
    }
    return [started, finished]


def map_span(o: Origin, span: Span) -> list[dict[str, Any]] | Unmapped:
    """The event documents of one span (not yet validated), or why it gives none."""
    a = A.to_dict(span.attributes)
    op = operation(a)
    if (op in INFERENCE or op in (TOOL, AGENT)) and not (
        valid(span.trace_id, 16) and valid(span.span_id, 8)
    ):
        # The event ids derive from these: spans without real ids would share one.
        return Unmapped(
            "schema_violation",
            f"span {span.name[:100]!r} has no valid trace and span id "
            f"(trace {span.trace_id.hex()[:32]!r}, span {span.span_id.hex()[:16]!r})",
        )
    if op in INFERENCE:
        doc = llm_call(o, span, a)
        return doc if isinstance(doc, Unmapped) else [doc]
    if op == TOOL:
        return [tool_call(o, span, a)]
    if op == AGENT:
        return run_events(o, span, a)
    if op is None:
        return Unmapped(
            "unknown_type",
            f"span {span.name[:100]!r} is not a GenAI span "
            "(no gen_ai.operation.name, model or tool)",
        )
    return Unmapped("unknown_type", f"gen_ai.operation.name {str(op)[:64]!r} maps to no event type")
