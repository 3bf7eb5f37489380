"""`client.action(...)`: one agent action — its policy decision, approval and execution — linked.

An action is one span. Everything the scope emits names it: the policy decision and the
approval request are its children (`parent_span_id` = the action's span), and the execution's
`tool_call` *is* the span (`span_id` = the action's span, its parent the enclosing run). So
`agentaudit.action_trail` joins the four event types on one id without guessing, and the
action id an auditor sees is that span id. The same link holds when an agent emits
`policy_decision` inside a plain `client.tool_call(...)` scope (the decision's parent is the
tool call's span), so code instrumented that way is linked too.

    with audit.action("payments", "refund", {"order": 123}, resource="order/123",
                      side_effect="write") as act:
        act.decide("refunds-over-100", "REQUIRE_APPROVAL", policy_hash, reason="over limit")
        act.request_approval("apr-9", "high")
        ...                                      # wait for the human
        act.approval_decided("alice", "approved", latency_ms=41_000)
        with act.execute():                      # kill switch checked here, like tool_call
            refund(123)

The scope emits nothing by itself: an action that was denied and never executed is its
decision alone. Decisions and approvals must be recorded before `execute()` is entered; the
trail compares their times with the execution's start (README, "The action trail").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agentaudit_sdk.scopes import Emitter, ToolCallScope, _Scope

if TYPE_CHECKING:
    from agentaudit_sdk.context import Bound


class ActionScope(_Scope):
    """What `client.action(...)` returns: the action's span, and the calls that record it."""

    def __init__(
        self,
        client: Emitter,
        tool: str,
        action: str,
        args: Any,
        resource: str | None,
        side_effect: str,
        idempotency_key: str | None,
    ) -> None:
        super().__init__(client)
        self.tool = tool
        self.action = action
        self.resource = resource if resource is not None else tool
        self._args = args
        self._side_effect = side_effect
        self._idempotency_key = idempotency_key
        self.approval_id: str | None = None
        self.decision: str | None = None
        """The last decision recorded with `decide` (None before)."""

    @property
    def action_id(self) -> str:
        """The action's id in the trail: its span id (set once the scope is entered)."""
        return self.span_id

    @property
    def parent_span_id(self) -> str | None:
        """The span the action hangs under (the enclosing run's, usually; set once entered)."""
        return self._parent.span_id

    def _child(self) -> dict[str, Any]:
        # explicit, so a decision recorded from another task or thread still names the action
        return {"trace_id": self.trace_id, "parent_span_id": self.span_id}

    def decide(
        self, rule_id: str, decision: str, policy_hash: str, reason: str | None = None
    ) -> str:
        """Record the policy decision for this action (ALLOW, DENY, REQUIRE_APPROVAL,
        ALLOW_WITH_CONSTRAINTS) and return it, so the agent can branch on it."""
        self.decision = decision
        payload = {
            "rule_id": rule_id,
            "decision": decision,
            "action": self.action,
            "resource": self.resource,
            "policy_hash": policy_hash,
            "reason": reason,
        }
        self._client.emit("policy_decision", payload, **self._child())
        return decision

    def request_approval(self, approval_id: str, risk: str) -> None:
        """Record that a human approval was asked for (risk ∈ low, medium, high, critical)."""
        self.approval_id = approval_id
        payload = {"approval_id": approval_id, "action": self.action, "risk": risk}
        self._client.emit("approval_requested", payload, **self._child())

    def approval_decided(
        self, approver_id: str, outcome: str, latency_ms: float, approval_id: str | None = None
    ) -> None:
        """Record the approver's answer (approved, rejected, expired) to this action's request.
        An approval service elsewhere may record it instead with `client.approval_decided`:
        the trail joins it by `approval_id`."""
        payload = {
            "approval_id": approval_id or self.approval_id,
            "approver_id": approver_id,
            "outcome": outcome,
            "latency_ms": latency_ms,
        }
        self._client.emit("approval_decided", payload, **self._child())

    def execute(self) -> ActionExecution:
        """`with act.execute():` — run the tool; emits the action's `tool_call` on exit.
        Entering raises `Blocked` if the kill switch blocks the agent or this tool."""
        return ActionExecution(
            self, self._client, self._args, self._side_effect, self._idempotency_key
        )


class ActionExecution(ToolCallScope):
    """The execution of an action: a tool call whose span is the action's own."""

    def __init__(
        self,
        action: ActionScope,
        client: Emitter,
        args: Any,
        side_effect: str,
        idempotency_key: str | None,
    ) -> None:
        super().__init__(client, action.tool, action.action, args, side_effect, idempotency_key)
        self._action = action

    def _new_span_id(self) -> str:
        return self._action.span_id

    def _context(self, parent: Bound) -> Bound:
        # events inside the execution (an llm call the tool makes) stay under the action
        return parent

    def _span_envelope(self) -> dict[str, Any]:
        # the tool_call is the action's span, so its parent is the action's parent
        return {
            "trace_id": self._action.trace_id,
            "span_id": self._action.span_id,
            "parent_span_id": self._action.parent_span_id,
        }
