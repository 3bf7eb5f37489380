"""The errors the SDK raises into agent code on purpose: the kill switch refusing work.

Everything else the SDK does is silent towards the agent (counted in `client.stats`, logged);
these are the exceptions. Agents handle them by class or by `code`, never by message text.
Each carries the `stop_reason` that a `client.run(...)` scope records when the error ends
the run. Standard library only: `agentaudit_sdk.scopes` imports this module at
`import agentaudit_sdk`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

STOP_REASON_BY_CONTROL_REASON = {
    "budget_exhausted": "budget_exhausted",
    "breaker_open": "breaker_open",
    "breaker_half_open": "breaker_open",
    # An operator stopped the agent: the run did not fail and no policy denied it; of the
    # contract's stop reasons, "cancelled" says what happened. Unknown or unblock-type
    # reasons on a block (a producer bug) fall back to it too.
    "manual": "cancelled",
    # The tenant's own policy (fail-closed while the kill switch is blind) refused the work.
    "kill_switch_blind": "policy_denied",
}

_WHAT_TO_DO = {
    "budget_exhausted": (
        "The budget is spent: stop this run and do not retry before {when}; "
        "to resume earlier, the budget owner raises the limit or an operator unblocks the scope."
    ),
    "breaker_open": (
        "A circuit breaker tripped: stop this run and retry after {when}, once the breaker "
        "lets probe calls through; on-call follows the runbook."
    ),
    "breaker_half_open": (
        "The circuit breaker is probing recovery and this work is not one of the probes: "
        "retry after {when}."
    ),
    "manual": "An operator blocked this scope: stop and contact on-call before retrying.",
    "kill_switch_blind": (
        "No block can reach this process while the stream jobs' heartbeat is missing, and "
        "this tenant chose to fail closed: retry once the view is fresh again "
        "(client.control.staleness_s); on-call restarts the stream jobs."
    ),
}


_UNTIL = {"kill_switch_blind": "while the kill switch is blind"}


def stop_reason_for(control_reason: str) -> str:
    """The `run_finished.stop_reason` for a block with this `ControlMessage.reason`."""
    return STOP_REASON_BY_CONTROL_REASON.get(control_reason, "cancelled")


def _iso(value: datetime) -> str:
    if value.tzinfo is None:  # the contract allows a naive `until`; the SDK reads it as UTC
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


class AgentAuditError(Exception):
    """Base of the errors the SDK raises into agent code (only the kill switch does).

    `code` classifies the error; `stop_reason` is what `client.run(...)` records when the
    error escapes the run.
    """

    code: ClassVar[str] = "agentaudit_error"
    stop_reason: str = "error"


class Blocked(AgentAuditError):
    """The kill switch: work in this scope is refused until the block lifts.

    Attributes: `scope` (the blocked scope's key, e.g. `tenant=acme/agent=support-bot`),
    `reason` (budget_exhausted, breaker_open, breaker_half_open, manual, kill_switch_blind:
    a fail-closed tenant while the SDK cannot see the pipeline), `message` (why,
    from the stream job or operator), `runbook` (path of the on-call runbook, or None),
    `until` (when the block lifts by itself, or None), `control_id`, `issued_by`,
    `issued_at`, `tool` (the tool whose call was refused, if any) and `stop_reason`.
    """

    code: ClassVar[str] = "blocked"

    def __init__(
        self,
        *,
        scope: str,
        reason: str,
        message: str,
        runbook: str | None = None,
        until: datetime | None = None,
        control_id: str = "",
        issued_by: str = "",
        issued_at: datetime | None = None,
        tool: str | None = None,
    ) -> None:
        self.scope = scope
        self.reason = reason
        self.message = message
        self.runbook = runbook
        self.until = until
        self.control_id = control_id
        self.issued_by = issued_by
        self.issued_at = issued_at
        self.tool = tool
        self.stop_reason = stop_reason_for(reason)
        super().__init__(self._render())

    def _render(self) -> str:
        what = f"calls to tool {self.tool!r}" if self.tool else "work"
        until_unset = _UNTIL.get(self.reason, "until unblocked")
        lifts = f"until {_iso(self.until)}" if self.until else until_unset
        when = _iso(self.until) if self.until else "the scope is unblocked"
        todo = _WHAT_TO_DO.get(self.reason, _WHAT_TO_DO["manual"]).format(when=when)
        runbook = f"Runbook: {self.runbook}." if self.runbook else "No runbook was given."
        return (
            f"agentaudit kill switch: {what} in scope {self.scope} is blocked {lifts} "
            f"(reason: {self.reason}, by {self.issued_by or 'unknown'}): {self.message} "
            f"{todo} {runbook}"
        )

    def _fields(self) -> dict[str, Any]:
        names = (
            "scope",
            "reason",
            "message",
            "runbook",
            "until",
            "control_id",
            "issued_by",
            "issued_at",
            "tool",
        )
        return {name: getattr(self, name) for name in names}

    def __reduce__(self) -> tuple[Any, ...]:
        # keyword-only __init__: make the error survive pickling (multiprocessing, task queues)
        return (_rebuild, (type(self), self._fields()))


class RequestBudgetExceeded(AgentAuditError):
    """A `request` budget caps one LLM call, and this call's worst case is over the cap.

    Attributes: `budget` (its name), `tenant_id`, `limit_kind` (`max_tokens` or
    `max_cost_usd`), `limit`, `estimate` (worst-case tokens or USD, same unit as `limit`),
    `provider`, `model`, `input_tokens`, `max_output_tokens`. Nothing was sent to the
    provider; the run that lets it escape ends with `stop_reason` budget_exhausted.
    """

    code: ClassVar[str] = "request_budget_exceeded"
    stop_reason = "budget_exhausted"

    def __init__(
        self,
        *,
        budget: str,
        tenant_id: str,
        limit_kind: str,
        limit: Any,
        estimate: Any,
        provider: str,
        model: str,
        input_tokens: int,
        max_output_tokens: int,
    ) -> None:
        self.budget = budget
        self.tenant_id = tenant_id
        self.limit_kind = limit_kind
        self.limit = limit
        self.estimate = estimate
        self.provider = provider
        self.model = model
        self.input_tokens = input_tokens
        self.max_output_tokens = max_output_tokens
        unit = " USD" if limit_kind == "max_cost_usd" else " tokens"
        super().__init__(
            f"agentaudit request budget {budget!r} of tenant {tenant_id} caps one call at "
            f"{limit_kind}={limit}; this call to {provider}/{model} could reach {estimate}{unit} "
            f"({input_tokens} input + {max_output_tokens} max output tokens). Nothing was sent. "
            "Lower max_output_tokens, shorten the prompt or use a cheaper model, or ask the "
            "budget owner to raise the limit (budgets file, `agentaudit budgets`)."
        )

    def __reduce__(self) -> tuple[Any, ...]:
        names = (
            "budget",
            "tenant_id",
            "limit_kind",
            "limit",
            "estimate",
            "provider",
            "model",
            "input_tokens",
            "max_output_tokens",
        )
        return (_rebuild, (type(self), {name: getattr(self, name) for name in names}))


class CostCeilingUnenforceable(RequestBudgetExceeded):
    """A `request` budget caps one call's cost, and this SDK cannot price the call: it was
    installed without the price data (`pip install 'agentaudit-sdk[prices]'`). Refused
    rather than let the ceiling pass unchecked; `estimate` is None. A `RequestBudgetExceeded`,
    so agents that handle refused requests handle this one too."""

    code: ClassVar[str] = "cost_ceiling_unenforceable"

    def __init__(self, **fields: Any) -> None:
        super().__init__(**fields)
        self.args = (
            f"agentaudit request budget {self.budget!r} of tenant {self.tenant_id} caps one "
            f"call at max_cost_usd={self.limit}, and this SDK cannot price the call to "
            f"{self.provider}/{self.model}: it was installed without the price data. Nothing "
            "was sent. Install it: pip install 'agentaudit-sdk[prices]'.",
        )


def _rebuild(cls: type[AgentAuditError], fields: dict[str, Any]) -> AgentAuditError:
    return cls(**fields)
