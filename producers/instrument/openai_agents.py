"""OpenAI Agents SDK integration: a `TracingProcessor` that records agent runs, tool calls and
LLM calls as our events.

    from agents import add_trace_processor
    from agentaudit_sdk.instrument.openai_agents import AgentAuditProcessor

    add_trace_processor(AgentAuditProcessor(audit))

One agents trace (one `Runner.run`) is one run: `run_started` when it starts (run_id = the
trace id), `run_finished` when it ends, with `stop_reason` completed, max_steps ("Max turns
exceeded"), error (any span that ended with an error), or the kill switch's own stop reason
(e.g. budget_exhausted) when its `Blocked` ends the run, `steps` = the LLM and tool calls
recorded in it. A function-tool span is a `tool_call` (tool = the MCP server for MCP tools,
else the function's name; `args_hash` of its JSON arguments; side effect from `side_effects`
by function name, else `default_side_effect`), a generation span (Chat Completions models)
or response span (Responses models) is an `llm_call` with usage normalised like the
drop-in wrappers'. Trace and span ids map to ours (hex, the agents' prefixes dropped) so the
events form the run's tree.

A tracing processor only observes: it cannot refuse work. For the kill switch and request
ceilings, also instrument the client the agents use (`set_default_openai_client(
instrument(AsyncOpenAI(), audit=audit))`) and pass `record_llm_calls=False` here so each
call is recorded once, by the wrapper. Nothing here imports `agents`: the processor is duck
typed, so it subclasses nothing (the Agents SDK calls it by its method names).
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from agentaudit_sdk.errors import AgentAuditError
from agentaudit_sdk.fields import args_hash
from agentaudit_sdk.usage import usage_from_openai

if TYPE_CHECKING:
    from agentaudit_sdk.api import BaseClient

logger = logging.getLogger("agentaudit.producers")

_NO_USAGE = {"input_tokens": 0, "output_tokens": 0}


def _hex(agents_id: str | None, width: int) -> str | None:
    """`trace_<32 hex>` / `span_<24 hex>` -> our 32 / 16 lower-case hex ids."""
    if not agents_id:
        return None
    digits = agents_id.rpartition("_")[2].lower()
    if len(digits) < width or any(c not in "0123456789abcdef" for c in digits):
        from agentaudit_sdk.fields import sha256_hex

        digits = sha256_hex(agents_id.encode())  # not the SDK's own format: still stable
    return digits[:width]


def _ms(started: str | None, ended: str | None) -> float:
    if not started or not ended:
        return 0.0
    delta = datetime.fromisoformat(ended) - datetime.fromisoformat(started)
    return max(0.0, delta.total_seconds() * 1000.0)


class _Run:
    __slots__ = ("error", "max_turns", "steps")

    def __init__(self) -> None:
        self.steps = 0
        self.error = False
        self.max_turns = False


class AgentAuditProcessor:
    """Records agents traces as runs, tool calls and LLM calls on `audit` (default: the
    process client, `agentaudit_sdk.get_client()`)."""

    def __init__(
        self,
        audit: BaseClient | None = None,
        *,
        record_llm_calls: bool = True,
        provider: str = "openai",
        side_effects: Mapping[str, str] | None = None,
        default_side_effect: str = "external",
    ) -> None:
        if audit is None:
            from agentaudit_sdk.registry import get_client

            audit = get_client()
        self.audit = audit
        self.record_llm_calls = record_llm_calls
        self.provider = provider
        self.side_effects = dict(side_effects or {})
        self.default_side_effect = default_side_effect
        self._runs: dict[str, _Run] = {}
        self._started: dict[str, float] = {}
        self._lock = threading.Lock()  # traces may end on other threads than they started

    # -- the TracingProcessor interface -------------------------------------------------

    def on_trace_start(self, trace: Any) -> None:
        try:
            with self._lock:
                self._runs[trace.trace_id] = _Run()
                self._started[trace.trace_id] = self.audit.clock.monotonic()
            payload = {"goal_hash": None, "max_steps": None}
            self.audit.emit("run_started", payload, **self._root(trace.trace_id))
        except Exception:
            logger.exception("agentaudit: could not record an agents trace start")

    def on_trace_end(self, trace: Any) -> None:
        try:
            with self._lock:
                run = self._runs.pop(trace.trace_id, None) or _Run()
                t0 = self._started.pop(trace.trace_id, None)
            elapsed = 0.0 if t0 is None else (self.audit.clock.monotonic() - t0) * 1000.0
            reason = "max_steps" if run.max_turns else "error" if run.error else "completed"
            escaping = sys.exception()  # the trace ends in the run's `with` while it unwinds
            if isinstance(escaping, AgentAuditError):  # the kill switch refused the run's work
                reason = escaping.stop_reason
            payload = {"stop_reason": reason, "steps": run.steps, "duration_ms": max(0.0, elapsed)}
            self.audit.emit("run_finished", payload, **self._root(trace.trace_id))
        except Exception:
            logger.exception("agentaudit: could not record an agents trace end")

    def on_span_start(self, span: Any) -> None:
        return None

    def on_span_end(self, span: Any) -> None:
        try:
            self._span_ended(span)
        except Exception:
            logger.exception("agentaudit: could not record an agents span")

    def shutdown(self) -> None:
        self.audit.flush(5)

    def force_flush(self) -> None:
        self.audit.flush(5)

    # -- spans -> events -----------------------------------------------------------------

    def _span_ended(self, span: Any) -> None:
        data = span.span_data
        kind = data.type
        error = getattr(span, "error", None)
        run = self._runs.get(span.trace_id)
        if run is not None and error:
            run.error = True
            if "max turns" in str(error.get("message", "")).lower():
                run.max_turns = True
        if kind == "function":
            self._tool_call(span, data, error)
        elif kind in ("generation", "response") and self.record_llm_calls:
            self._llm_call(span, data, error)
        else:
            return
        if run is not None:
            run.steps += 1

    def _envelope(self, span: Any) -> dict[str, Any]:
        root = self._root(span.trace_id)
        root["parent_span_id"] = _hex(span.parent_id, 16) or root["span_id"]
        root["span_id"] = _hex(span.span_id, 16)
        return root

    def _root(self, trace_id: str) -> dict[str, Any]:
        # the trace's root span: the run's own span; spans without a parent hang under it
        return {"run_id": trace_id, "trace_id": _hex(trace_id, 32), "span_id": _hex(trace_id, 16)}

    def _status(self, error: Any) -> dict[str, Any]:
        if not error:
            return {"status": "ok"}
        return {"status": "error", "error_type": "agents-span-error"}

    def _tool_call(self, span: Any, data: Any, error: Any) -> None:
        server = (data.mcp_data or {}).get("server") if isinstance(data.mcp_data, dict) else None
        try:
            args = json.loads(data.input) if data.input else {}
        except (TypeError, ValueError):
            args = data.input
        payload = {
            "tool": server or data.name,
            "action": data.name,
            "args_hash": args_hash(args),
            "side_effect": self.side_effects.get(data.name, self.default_side_effect),
            "latency_ms": _ms(span.started_at, span.ended_at),
            **self._status(error),
        }
        self.audit.emit("tool_call", payload, **self._envelope(span))

    def _llm_call(self, span: Any, data: Any, error: Any) -> None:
        response = getattr(data, "response", None)
        usage_src = getattr(response, "usage", None) or getattr(data, "usage", None)
        model = getattr(response, "model", None) or getattr(data, "model", None)
        config = getattr(data, "model_config", None)
        request_model = (config or {}).get("model") if isinstance(config, dict) else None
        payload = {
            "provider": self.provider,
            "request_model": str(request_model or model or "unknown"),
            "response_model": model,
            "usage": _NO_USAGE if not usage_src else usage_from_openai(usage_src),
            "latency_ms": _ms(span.started_at, span.ended_at),
            **self._status(error),
        }
        self.audit.emit("llm_call", payload, **self._envelope(span))
