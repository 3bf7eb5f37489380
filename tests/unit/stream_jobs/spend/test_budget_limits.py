"""Budget limits at the edge of the numbers: every accepted limit is evaluated; a limit that
could not be scaled to nano-dollars is refused by the contract, not raised on per event."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from agentaudit_schemas.budgets import MAX_LIMIT_USD, Budget
from agentaudit_schemas.pricing import load_pricing
from agentaudit_schemas.request_ceiling import check_request
from stream_jobs.jobs import StreamJobs
from tests.factories import event_dict, wire

NOW = datetime(2026, 11, 2, 12, tzinfo=UTC)


def _tenant_budget(name: str, limit_usd: float) -> Budget:
    return Budget(name=name, scope="tenant", tenant_id="acme", window="day", limit_usd=limit_usd)


@pytest.mark.parametrize("field", ["limit_usd", "max_cost_usd"])
def test_a_limit_past_the_nano_dollar_range_is_refused(field: str) -> None:
    """1e300 passed `gt=0`; `usd_to_nano` then overflowed (OverflowError) on every event of
    the tenant, in the spend job's budget loop: the tenant's other budgets, a hard limit of
    $0.0001 too, never alerted nor blocked again (measured: spend failed once per event,
    no BudgetExhausted)."""
    doc = {"name": "huge", "tenant_id": "acme", field: 1e300}
    doc |= {"scope": "tenant", "window": "day"} if field == "limit_usd" else {"scope": "request"}
    with pytest.raises(ValidationError, match="less than or equal"):
        Budget.model_validate(doc)


def test_the_largest_limit_accepted_is_evaluated_with_the_tenant_s_other_budgets() -> None:
    jobs = StreamJobs(
        load_pricing(), [_tenant_budget("huge", MAX_LIMIT_USD), _tenant_budget("tiny", 0.0001)]
    )
    doc = event_dict("acme", "llm_call")
    doc["occurred_at"] = NOW.isoformat()
    records = jobs.process(0, [(1, wire(doc))], NOW)
    assert jobs.counters.failed_by_job == {}
    assert "BudgetExhausted" in {getattr(r, "kind", None) for r in records}
    ceiling = Budget(name="r", scope="request", tenant_id="acme", max_cost_usd=MAX_LIMIT_USD)
    assert check_request([ceiling], "acme", tokens=10, cost_usd=MAX_LIMIT_USD) is None
