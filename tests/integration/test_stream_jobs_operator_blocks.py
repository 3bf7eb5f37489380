"""The jobs' own control messages keep an operator's block of the same scope.

The control topic keeps the latest message per scope, and the SDK obeys it. The jobs'
UNBLOCK of a scope (here: the budget that blocked the tenant was removed) was published over
an operator's `agentaudit block` of that tenant, so the operator's block was silently lifted.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from agentaudit.broker import ensure_topics
from agentaudit.control_plane import (
    active_blocks,
    manual_control,
    publish_budgets,
    publish_control,
    read_controls,
    remove_budget,
)
from agentaudit.settings import Settings
from agentaudit_schemas.budgets import Budget
from agentaudit_schemas.records import ControlAction, ControlReason, Scope
from stream_jobs.app import StreamJobsApp
from stream_jobs.runtime import running
from tests.factories import event_dict, wire
from tests.helpers_wait import poll_until
from tests.integration.helpers import produce_raw

pytestmark = [pytest.mark.integration, pytest.mark.faults]  # ~10 s
TENANT = "acme-held"


async def _latest(settings: Settings) -> tuple[ControlAction, ControlReason] | None:
    msg = (await read_controls(settings)).get(f"tenant={TENANT}")
    return None if msg is None else (msg.action, msg.reason)


async def test_removing_the_budget_that_blocked_a_tenant_keeps_an_operator_s_block(
    settings: Settings,
) -> None:
    await ensure_topics(settings)
    budget = Budget(
        name="held-month",
        scope="tenant",
        tenant_id=TENANT,
        window="month",
        limit_usd=0.0001,  # one call (tests.factories' llm_call costs $0.00047) exhausts it
        hard_limit=True,
    )
    await publish_budgets(settings, [budget])
    jobs = StreamJobsApp(settings, app_id=f"jobs-{settings.consumer_group}")
    async with running(jobs.app, timeout=90):
        await poll_until(jobs.budgets_seen.is_set, 30, "the budgets topic read")
        await produce_raw(settings, [(TENANT.encode(), wire(event_dict(TENANT, "llm_call")))])
        blocked = (ControlAction.BLOCK, ControlReason.BUDGET_EXHAUSTED)
        await poll_until(lambda: jobs.jobs.counters.events >= 1, 30, "the call applied")
        assert await _latest(settings) == blocked

        now = datetime.now(UTC)
        await publish_control(
            settings,
            manual_control(
                Scope(tenant_id=TENANT), ControlAction.BLOCK, issued_by="oncall", now=now
            ),
        )
        key = f"tenant={TENANT}"
        await poll_until(lambda: jobs.operator_blocks.holds(key, now), 30, "the block followed")
        await remove_budget(settings, budget.name)
        await poll_until(lambda: not jobs.jobs.spend.evaluator.budgets(), 30, "budget removed")
        async with jobs._lock:  # noqa: SLF001 (the removal's records are published under it)
            pass
    assert await _latest(settings) == (ControlAction.BLOCK, ControlReason.MANUAL)
    assert [m.scope.key for m in active_blocks(await read_controls(settings), now)] == [key]
