"""Context managers behind `client.run(...)`, `client.llm_call(...)` and `client.tool_call(...)`.

Each scope is one class usable with `with` (sync agents) and `async with` (async agents): it
opens a span in the bound context (so events emitted inside become its children), measures
its duration on the client's monotonic clock and emits its event on exit. An exception from
the agent's own code is recorded and always re-raised; a failure inside the SDK is logged
and never reaches the agent.

The kill switch is the one thing that raises on purpose: llm and tool call scopes ask the
client before the work starts (`check`, and `check_request` when the llm call came with a
size estimate) and raise `Blocked` / `RequestBudgetExceeded` from `__enter__`, before a
span opens, so a refused call emits no event. A run refused at its start is recorded as a
run that stopped at once (`run_started` then `run_finished` with the block's stop reason).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping
from contextvars import Token
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self

import uuid_utils

from agentaudit_sdk.clock import TimeSource
from agentaudit_sdk.context import (
    CURRENT,
    EMPTY,
    AsyncFromSync,
    Bound,
    RunState,
    new_span_id,
    new_trace_id,
    restore,
)
from agentaudit_sdk.errors import AgentAuditError
from agentaudit_sdk.fields import args_hash, error_type_of, sha256_hex

if TYPE_CHECKING:
    from agentaudit_schemas.payloads import Usage

logger = logging.getLogger("agentaudit.producers")

_ZERO_USAGE = {"input_tokens": 0, "output_tokens": 0}


class Emitter(Protocol):
    """The part of a client a scope needs."""

    clock: TimeSource

    def emit(self, type: str, payload: Mapping[str, Any], **envelope: Any) -> None: ...

    def check(self, tool: str | None = None) -> None: ...

    def check_request(
        self, provider: str, model: str, *, input_tokens: int, max_output_tokens: int
    ) -> Any: ...


class _Scope(AsyncFromSync):
    """Span bookkeeping shared by every scope."""

    def __init__(self, client: Emitter) -> None:
        self._client = client
        self._parent: Bound = EMPTY
        self._token: Token[Bound] | None = None
        self._t0 = 0.0
        self.trace_id = ""
        self.span_id = ""

    def _context(self, parent: Bound) -> Bound:
        return parent.child_span(self.span_id, self.trace_id)

    def _admit(self) -> None:
        """Hook: raise to refuse the work before anything is opened or emitted."""

    def _new_span_id(self) -> str:
        """Hook: the span this scope opens (an action's execution reuses the action's)."""
        return new_span_id()

    def _started(self) -> None:
        """Hook: emit a start event (runs inside the new context)."""

    def _finished(self, exc: BaseException | None, elapsed_ms: float) -> None:
        """Hook: emit the closing event (runs inside the scope's context, before restoring)."""

    def _span_envelope(self) -> dict[str, Any]:
        return {
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "parent_span_id": self._parent.span_id,
        }

    def _refuse_if_blocked(self, admit: Callable[[], None]) -> None:
        try:
            admit()
        except AgentAuditError:
            raise  # the kill switch: the one exception the SDK means to raise
        except Exception:  # a bug in the check must not stop the agent
            logger.exception("agentaudit: kill-switch check failed in %s", type(self).__name__)

    def __enter__(self) -> Self:
        self._refuse_if_blocked(self._admit)
        parent = CURRENT.get()
        self._parent = parent
        self.trace_id = parent.trace_id or new_trace_id()
        self.span_id = self._new_span_id()
        self._token = CURRENT.set(self._context(parent))
        self._t0 = self._client.clock.monotonic()
        self._started()
        return self

    def __exit__(
        self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # Returning None (falsy) re-raises the agent's exception: the SDK never swallows it.
        try:
            elapsed_ms = max(0.0, (self._client.clock.monotonic() - self._t0) * 1000.0)
            self._finished(exc, elapsed_ms)
        except Exception:  # an SDK bug must not replace or hide what the agent was doing
            logger.exception("agentaudit: failed to record %s", type(self).__name__)
        finally:
            if self._token is not None:
                restore(self._token, self._parent)
                self._token = None


class _CallScope(_Scope):
    """An llm or tool call: status/error_type from an escaping exception or from `fail()`."""

    def __init__(self, client: Emitter) -> None:
        super().__init__(client)
        self.error_type: str | None = None

    def fail(self, error: BaseException | str) -> None:
        """Mark the call failed without raising (e.g. the agent handled a provider error)."""
        self.error_type = error_type_of(error)

    def _status(self, exc: BaseException | None) -> dict[str, Any]:
        if exc is not None:
            return {"status": "error", "error_type": error_type_of(exc)}
        if self.error_type is not None:
            return {"status": "error", "error_type": self.error_type}
        return {"status": "ok"}


class RunScope(_Scope):
    """`client.run(...)`: emits `run_started` on enter and `run_finished` on exit.

    Set `run.stop_reason` (e.g. "max_steps") before leaving to override the inferred one:
    completed, or error / cancelled / timeout when an exception escapes. `run.steps` counts the
    llm and tool calls emitted inside unless the agent assigns it.
    """

    def __init__(
        self, client: Emitter, goal: str | None, max_steps: int | None, run_id: str | None
    ) -> None:
        super().__init__(client)
        self.run_id = run_id or str(uuid_utils.uuid7())
        self.stop_reason: str | None = None
        self._goal = goal
        self._max_steps = max_steps
        self._state = RunState()
        self._steps: int | None = None

    @property
    def steps(self) -> int:
        return self._state.steps if self._steps is None else self._steps

    @steps.setter
    def steps(self, value: int) -> None:
        self._steps = value

    def _context(self, parent: Bound) -> Bound:
        bound = parent.with_fields({"run_id": self.run_id})
        return bound.child_span(self.span_id, self.trace_id, self._state)

    def __enter__(self) -> Self:
        super().__enter__()
        try:
            self._refuse_if_blocked(self._client.check)
        except AgentAuditError as refused:
            # record the refused run (started, stopped at once, with the block's reason)
            self.__exit__(type(refused), refused, refused.__traceback__)
            raise
        return self

    def _started(self) -> None:
        goal_hash = None if self._goal is None else sha256_hex(self._goal.encode("utf-8"))
        payload = {"goal_hash": goal_hash, "max_steps": self._max_steps}
        self._client.emit("run_started", payload, **self._span_envelope())

    def _finished(self, exc: BaseException | None, elapsed_ms: float) -> None:
        reason = self.stop_reason or _stop_reason_for(exc)
        payload = {"stop_reason": reason, "steps": self.steps, "duration_ms": elapsed_ms}
        self._client.emit("run_finished", payload, **self._span_envelope())


def _stop_reason_for(exc: BaseException | None) -> str:
    if exc is None:
        return "completed"
    if isinstance(exc, BaseExceptionGroup):  # a TaskGroup's: the kill switch explains the rest
        refused: BaseException | None = exc.subgroup(AgentAuditError)
        while isinstance(refused, BaseExceptionGroup):
            refused = refused.exceptions[0]
        if refused is not None:
            exc = refused
    if isinstance(exc, AgentAuditError):
        return exc.stop_reason
    asyncio = sys.modules.get(
        "asyncio"
    )  # not imported → the exception cannot be its CancelledError
    if isinstance(exc, KeyboardInterrupt) or (
        asyncio is not None and isinstance(exc, asyncio.CancelledError)
    ):
        return "cancelled"
    if isinstance(exc, TimeoutError):
        return "timeout"
    return "error"


class LlmCallScope(_CallScope):
    """`client.llm_call(...)`: call `.record(...)` with the provider's answer; emits `llm_call`
    on exit with the measured latency (usage defaults to zero tokens if never recorded)."""

    def __init__(
        self,
        client: Emitter,
        provider: str,
        request_model: str,
        content_prompt: str | None,
        estimate: tuple[int, int] | None = None,
    ) -> None:
        super().__init__(client)
        self._payload: dict[str, Any] = {"provider": provider, "request_model": request_model}
        self._prompt = content_prompt
        self._response: str | None = None
        self._estimate = estimate

    def _admit(self) -> None:
        self._client.check()
        if self._estimate is not None:
            input_tokens, max_output_tokens = self._estimate
            self._client.check_request(
                self._payload["provider"],
                self._payload["request_model"],
                input_tokens=input_tokens,
                max_output_tokens=max_output_tokens,
            )

    def record(
        self,
        usage: Usage | Mapping[str, int],
        response_model: str | None = None,
        finish_reason: str | None = None,
        ttft_ms: float | None = None,
        provider_cost_usd: float | None = None,
        response: str | None = None,
    ) -> None:
        """Record what the provider returned; `usage` in OpenTelemetry semantics (see `Usage`)."""
        self._payload.update(
            usage=usage,
            response_model=response_model,
            finish_reason=finish_reason,
            ttft_ms=ttft_ms,
            provider_cost_usd=provider_cost_usd,
        )
        self._response = response

    def _finished(self, exc: BaseException | None, elapsed_ms: float) -> None:
        payload = {
            "usage": _ZERO_USAGE,
            **self._payload,
            "latency_ms": elapsed_ms,
            **self._status(exc),
        }
        if self._prompt is not None or self._response is not None:
            # "plain" here; the pipeline switches it to "redacted" when redaction replaced anything.
            payload["content"] = {
                "handling": "plain",
                "prompt": self._prompt,
                "response": self._response,
            }
        self._client.emit("llm_call", payload, **self._span_envelope())


class ToolCallScope(_CallScope):
    """`client.tool_call(...)`: emits `tool_call` on exit with args_hash and measured latency."""

    def __init__(
        self,
        client: Emitter,
        tool: str,
        action: str,
        args: Any,
        side_effect: str,
        idempotency_key: str | None,
    ) -> None:
        super().__init__(client)
        self.args_hash = args_hash(args)
        self._payload: dict[str, Any] = {
            "tool": tool,
            "action": action,
            "args_hash": self.args_hash,
            "side_effect": side_effect,
            "idempotency_key": idempotency_key,
        }

    def _admit(self) -> None:
        self._client.check(self._payload["tool"])

    def _finished(self, exc: BaseException | None, elapsed_ms: float) -> None:
        payload = {**self._payload, "latency_ms": elapsed_ms, **self._status(exc)}
        self._client.emit("tool_call", payload, **self._span_envelope())
