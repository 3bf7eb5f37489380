"""The client surface shared by the real client, the no-op default and the global proxy.

`BaseClient` implements the helpers once on top of three primitives (`emit`, `emit_event`,
`clock`); subclasses decide what emitting means. Every method here is safe from sync code
(the real client's background thread does the I/O) and from async code (nothing blocks).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from agentaudit_sdk.action_scope import ActionScope
from agentaudit_sdk.clock import SYSTEM_CLOCK, TimeSource
from agentaudit_sdk.context import Binding
from agentaudit_sdk.scopes import LlmCallScope, RunScope, ToolCallScope
from agentaudit_sdk.stats import ClientStats

if TYPE_CHECKING:
    from pydantic import BaseModel

    from agentaudit_sdk.request_budget import RequestEstimate


class BaseClient(ABC):
    """Helpers for the common event shapes, context binding, and the lifecycle contract."""

    clock: TimeSource = SYSTEM_CLOCK

    # -- primitives -------------------------------------------------------------------------

    @abstractmethod
    def emit(self, type: str, payload: Mapping[str, Any], **envelope: Any) -> None:
        """Queue one event of `type`; never blocks, never raises. `envelope` overrides bound
        fields."""

    @abstractmethod
    def emit_event(self, event: BaseModel) -> None:
        """Queue an already-built event model (it still goes through redaction and validation)."""

    @abstractmethod
    def flush(self, timeout: float | None = None, *, delivered: bool = False) -> bool:
        """Block until everything emitted before the call is acknowledged by the broker or
        spooled (`delivered=True`: acknowledged, spool replay included); False on timeout."""

    @abstractmethod
    def shutdown(self, timeout: float | None = None) -> bool:
        """Flush, stop the background thread and close the transport; idempotent."""

    @abstractmethod
    async def aflush(self, timeout: float | None = None, *, delivered: bool = False) -> bool:
        """`flush` for async agents: awaits without blocking the event loop."""

    @abstractmethod
    async def ashutdown(self, timeout: float | None = None) -> bool:
        """`shutdown` for async agents: awaits without blocking the event loop."""

    @property
    @abstractmethod
    def stats(self) -> ClientStats:
        """Snapshot of the pipeline counters."""

    @property
    @abstractmethod
    def recent_errors(self) -> list[Exception]:
        """The latest validation errors (a small ring buffer), newest last."""

    # -- kill switch ------------------------------------------------------------------------

    def check(self, tool: str | None = None) -> None:
        """Raise `agentaudit_sdk.Blocked` if the kill switch blocks work (or calls to `tool`) in the
        bound context. The helpers call it before the work starts; no-op without a pipeline."""
        return None  # deliberately not abstract: the no-op client blocks nothing

    def check_request(
        self,
        provider: str,
        model: str,
        *,
        input_tokens: int,
        max_output_tokens: int,
        cached_input_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> RequestEstimate | None:
        """Raise `agentaudit_sdk.RequestBudgetExceeded` if one LLM call's worst case (prompt plus
        `max_output_tokens`) exceeds a `request` budget of the bound tenant. Returns the
        estimate, or None when no request budget applies (always, without a pipeline)."""
        return None

    # -- context ----------------------------------------------------------------------------

    def bind(
        self,
        *,
        tenant_id: str | None = None,
        user_id: str | None = None,
        agent_id: str | None = None,
        agent_version: str | None = None,
        deployment: str | None = None,
        variant: str | None = None,
        session_id: str | None = None,
        run_id: str | None = None,
        attributes: Mapping[str, str | int | float | bool] | None = None,
    ) -> Binding:
        """Bind envelope fields for everything emitted inside `with`/`async with`; nested binds
        merge (attributes key by key), `None` leaves a field as it is, exit restores."""
        return Binding(
            {
                "tenant_id": tenant_id,
                "user_id": user_id,
                "agent_id": agent_id,
                "agent_version": agent_version,
                "deployment": deployment,
                "variant": variant,
                "session_id": session_id,
                "run_id": run_id,
                "attributes": attributes,
            }
        )

    # -- scopes -----------------------------------------------------------------------------

    def run(
        self, goal: str | None = None, max_steps: int | None = None, run_id: str | None = None
    ) -> RunScope:
        """`with client.run(goal) as run:` — run_started/run_finished around one agent run.

        A blocked scope refuses the run: `run_finished` follows `run_started` at once with the
        block's stop reason and `Blocked` is raised; a `Blocked` or `RequestBudgetExceeded`
        escaping the run sets `stop_reason` budget_exhausted / breaker_open / cancelled."""
        return RunScope(self, goal, max_steps, run_id)

    def llm_call(
        self,
        provider: str,
        request_model: str,
        *,
        content_prompt: str | None = None,
        input_tokens: int | None = None,
        max_output_tokens: int | None = None,
    ) -> LlmCallScope:
        """`with client.llm_call("openai", "gpt-4o") as call: ...; call.record(usage)`.

        Entering raises `Blocked` in a blocked scope; given both `input_tokens` (estimated
        prompt size) and `max_output_tokens`, it also enforces the tenant's request budgets
        (`check_request`) before the call."""
        estimate = None
        if input_tokens is not None and max_output_tokens is not None:
            estimate = (input_tokens, max_output_tokens)
        elif input_tokens is not None or max_output_tokens is not None:
            raise TypeError(
                "llm_call: the worst case needs both input_tokens and max_output_tokens"
            )
        return LlmCallScope(self, provider, request_model, content_prompt, estimate)

    def tool_call(
        self,
        tool: str,
        action: str,
        args: Any,
        side_effect: str = "read",
        idempotency_key: str | None = None,
    ) -> ToolCallScope:
        """`with client.tool_call("github", "create_issue", args, side_effect="write"):`;
        entering raises `Blocked` if the agent, or calls to this tool, are blocked."""
        return ToolCallScope(self, tool, action, args, side_effect, idempotency_key)

    def action(
        self,
        tool: str,
        action: str,
        args: Any,
        *,
        resource: str | None = None,
        side_effect: str = "read",
        idempotency_key: str | None = None,
    ) -> ActionScope:
        """`with client.action("payments", "refund", args, side_effect="write") as act:` — one
        action's decision (`act.decide`), approval (`act.request_approval`,
        `act.approval_decided`) and execution (`with act.execute():`) linked by one span;
        `resource` defaults to `tool`. See `agentaudit_sdk.action_scope`."""
        return ActionScope(self, tool, action, args, resource, side_effect, idempotency_key)

    # -- point events -----------------------------------------------------------------------

    def policy_decision(
        self,
        rule_id: str,
        decision: str,
        action: str,
        resource: str,
        policy_hash: str,
        reason: str | None = None,
        **envelope: Any,
    ) -> None:
        """Emit `policy_decision` (decision ∈ ALLOW, DENY, REQUIRE_APPROVAL,
        ALLOW_WITH_CONSTRAINTS)."""
        payload = {
            "rule_id": rule_id,
            "decision": decision,
            "action": action,
            "resource": resource,
            "policy_hash": policy_hash,
            "reason": reason,
        }
        self.emit("policy_decision", payload, **envelope)

    def approval_requested(self, approval_id: str, action: str, risk: str, **envelope: Any) -> None:
        """Emit `approval_requested` (risk ∈ low, medium, high, critical)."""
        self.emit(
            "approval_requested",
            {"approval_id": approval_id, "action": action, "risk": risk},
            **envelope,
        )

    def approval_decided(
        self, approval_id: str, approver_id: str, outcome: str, latency_ms: float, **envelope: Any
    ) -> None:
        """Emit `approval_decided` (outcome ∈ approved, rejected, expired)."""
        payload = {
            "approval_id": approval_id,
            "approver_id": approver_id,
            "outcome": outcome,
            "latency_ms": latency_ms,
        }
        self.emit("approval_decided", payload, **envelope)

    def guardrail_triggered(
        self, guardrail: str, action: str, score: float, **envelope: Any
    ) -> None:
        """Emit `guardrail_triggered` (guardrail ∈ prompt_injection, pii, token_flood,
        output_policy)."""
        self.emit(
            "guardrail_triggered",
            {"guardrail": guardrail, "action": action, "score": score},
            **envelope,
        )

    def eval_result(
        self,
        gold_set_id: str,
        case_id: str,
        metric: str,
        score: float,
        passed: bool,
        evaluator: str,
        **envelope: Any,
    ) -> None:
        """Emit `eval_result` for one gold-set case."""
        payload = {
            "gold_set_id": gold_set_id,
            "case_id": case_id,
            "metric": metric,
            "score": score,
            "passed": passed,
            "evaluator": evaluator,
        }
        self.emit("eval_result", payload, **envelope)

    def error(
        self, component: str, error_type: str, message: str | None = None, **envelope: Any
    ) -> None:
        """Emit `error`; the message is redacted before it leaves the process."""
        self.emit(
            "error",
            {"component": component, "error_type": error_type, "message": message},
            **envelope,
        )


class NoOpClient(BaseClient):
    """Does nothing: what `get_client()` delegates to until `configure()` installs a real client.

    Scopes and binds still work (they only touch the contextvar), so instrumented code behaves
    the same with or without a configured pipeline.
    """

    def emit(self, type: str, payload: Mapping[str, Any], **envelope: Any) -> None:
        return None

    def emit_event(self, event: BaseModel) -> None:
        return None

    def flush(self, timeout: float | None = None, *, delivered: bool = False) -> bool:
        return True

    def shutdown(self, timeout: float | None = None) -> bool:
        return True

    async def aflush(self, timeout: float | None = None, *, delivered: bool = False) -> bool:
        return True

    async def ashutdown(self, timeout: float | None = None) -> bool:
        return True

    @property
    def stats(self) -> ClientStats:
        return ClientStats()

    @property
    def recent_errors(self) -> list[Exception]:
        return []
