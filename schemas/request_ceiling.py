"""Per-request ceilings (`request` budgets), checked by the SDK before an LLM call.

Part of the contract (the SDK refuses with it, the pipeline evaluates budgets with it), so
the SDK needs nothing from `stream_jobs`; re-exported by `stream_jobs.spend.request` and
`stream_jobs.spend.budgets`. Amounts are compared in integer nano-dollars, so a ceiling of
$0.05 and a worst case of exactly $0.05 compare equal (reaching a ceiling fits).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from agentaudit_schemas.budgets import Budget, BudgetScope
from agentaudit_schemas.money import usd_to_nano


@dataclass(frozen=True, slots=True)
class RequestViolation:
    """A request over a `request` budget's ceiling: what the SDK refuses, and why."""

    budget: str
    metric: str
    """`tokens` or `cost_usd`."""
    limit: float
    observed: float

    @property
    def message(self) -> str:
        if self.metric == "tokens":
            return (
                f"request needs {self.observed:,.0f} tokens, over the {self.limit:,.0f}-token "
                f"ceiling of budget {self.budget!r}"
            )
        return (
            f"request costs ${self.observed:,.6f}, over the ${self.limit:,.6f} ceiling of "
            f"budget {self.budget!r}"
        )


def check_request(
    budgets: Iterable[Budget],
    tenant_id: str,
    *,
    tokens: int,
    cost_usd: float | Decimal,
    user_id: str | None = None,
) -> RequestViolation | None:
    """The first `request` budget (by name) of `tenant_id` that the request exceeds, or None.

    A budget naming a `user_id` applies to that user only (`*`: every user). Tokens are
    checked before cost.
    """
    cost_nano = usd_to_nano(cost_usd)
    for b in sorted(budgets, key=lambda b: b.name):
        if b.scope is not BudgetScope.REQUEST or b.tenant_id != tenant_id:
            continue
        if b.user_id not in (None, "*", user_id):
            continue
        if b.max_tokens is not None and tokens > b.max_tokens:
            return RequestViolation(b.name, "tokens", float(b.max_tokens), float(tokens))
        if b.max_cost_usd is not None and cost_nano > usd_to_nano(b.max_cost_usd):
            return RequestViolation(b.name, "cost_usd", b.max_cost_usd, float(cost_usd))
    return None
