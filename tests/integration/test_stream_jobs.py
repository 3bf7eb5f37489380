"""The stream jobs in the real faust runtime, against the real broker, closing the loop to the SDK:
a looping agent trips its breaker and its next tool call is refused; a tenant's budget alerts
once per threshold, blocks at 100 % and is unblocked when the window ends."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from agentaudit.broker import ensure_topics
from agentaudit.control_plane import publish_budgets
from agentaudit.settings import Settings
from agentaudit_schemas.budgets import Budget
from stream_jobs.app import StreamJobsApp
from stream_jobs.runtime import running
from tests.factories import event_dict, wire
from tests.helpers_wait import poll_until
from tests.integration.helpers import produce_raw

pytestmark = pytest.mark.integration


class SettableNow:
    """The jobs' `UtcNow`: real time until the test sets `at`."""

    def __init__(self) -> None:
        self.at: datetime | None = None

    def __call__(self) -> datetime:
        return self.at or datetime.now(UTC)


async def read_records(settings: Settings, topic: str) -> list[dict[str, Any]]:
    """Every record on `topic` so far (the local broker answers an idle fetch after ~0.5 s)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=200,
    )
    await consumer.start()
    try:
        found: list[dict[str, Any]] = []
        while batches := await consumer.getmany(timeout_ms=1000):
            found += [orjson.loads(m.value) for ms in batches.values() for m in ms if m.value]
        return found
    finally:
        await consumer.stop()


def sdk_client(settings: Settings, tenant: str) -> Any:
    from agentaudit_sdk import Client

    client = Client.from_settings(
        settings, tenant_id=tenant, agent_id="support-bot", agent_version="1.0.0"
    )
    assert client.control.wait_ready(15), "the SDK did not read the control topic"
    return client


async def test_a_looping_agent_trips_its_breaker_and_the_sdk_refuses_the_next_tool_call(
    settings: Settings,
) -> None:
    from agentaudit_sdk import Blocked

    await ensure_topics(settings)
    jobs = StreamJobsApp(settings, app_id=f"jobs-{settings.consumer_group}")
    async with running(jobs.app, timeout=90):
        client = await asyncio.to_thread(sdk_client, settings, "loopy")
        try:
            with pytest.raises(Blocked) as left, client.run(goal="answer a ticket"):
                for _ in range(8):  # the same tool and arguments over and over: a loop
                    with client.tool_call("crm_lookup", "lookup", {"customer": 42}):
                        pass
                assert await asyncio.to_thread(client.flush, 15, delivered=True)
                refused = await asyncio.to_thread(
                    client.control.wait_for,
                    lambda: (
                        client.control.blocked("loopy", None, "support-bot", "crm_lookup")
                        is not None
                    ),
                    30,
                )
                assert refused, f"no block arrived; jobs counters {jobs.jobs.counters}"
                with (
                    pytest.raises(Blocked) as caught,
                    client.tool_call("crm_lookup", "lookup", {"customer": 42}),
                ):
                    pytest.fail("the blocked tool call ran")
                with client.tool_call("kb_search", "search", {"q": "refund"}):
                    pass  # only the looping tool is blocked, not the agent
                with client.tool_call("crm_lookup", "lookup", {"customer": 42}):
                    pytest.fail("the blocked tool call ran")  # this Blocked leaves the run
            assert await asyncio.to_thread(client.flush, 15, delivered=True)
        finally:
            await asyncio.to_thread(client.shutdown, 10)
    assert left.value.reason == "breaker_open"
    events = await read_records(settings, settings.events_topic)
    finished = [e for e in events if e["type"] == "run_finished"]
    assert [e["payload"]["stop_reason"] for e in finished] == ["breaker_open"]
    err = caught.value
    assert err.reason == "breaker_open" and err.runbook == "runbooks/BreakerOpen.md"
    assert "tool=crm_lookup" in err.scope
    records = await read_records(settings, settings.alerts_topic)
    transitions = [r for r in records if r["record"] == "breaker_transition"]
    assert [(t["from_state"], t["to_state"], t["signal"]) for t in transitions] == [
        ("closed", "open", "loop")
    ]
    assert [r["kind"] for r in records if r["record"] == "alert"] == ["BreakerOpen"]


async def test_budget_alerts_once_per_threshold_blocks_at_the_limit_and_unblocks_next_window(
    settings: Settings,
) -> None:
    from agentaudit_sdk import Blocked

    await ensure_topics(settings)
    tenant, per_call = "acme-budget", 0.00047  # tests.factories' llm_call costs $0.00047
    await publish_budgets(
        settings,
        [
            Budget(
                name="acme-month",
                scope="tenant",
                tenant_id=tenant,
                window="month",
                limit_usd=10 * per_call,
            )
        ],
    )
    clock = SettableNow()
    jobs = StreamJobsApp(settings, clock=clock, app_id=f"jobs-{settings.consumer_group}")

    async def send(count: int) -> None:
        sent = jobs.jobs.counters.events
        await produce_raw(
            settings,
            [(tenant.encode(), wire(event_dict(tenant, kind="llm_call"))) for _ in range(count)],
        )
        await poll_until(
            lambda: jobs.jobs.counters.events >= sent + count, 30, f"{count} events processed"
        )

    async with running(jobs.app, timeout=90):
        await poll_until(jobs.budgets_seen.is_set, 30, "the budgets topic read")
        client = await asyncio.to_thread(sdk_client, settings, tenant)
        try:
            await send(4)  # 40 %: nothing yet
            await send(5)  # 90 %: crosses 50 % and 80 %
            await send(1)  # 100 %: exhausted, blocked until the month ends
            await send(3)  # over the limit: nothing new
            blocked = await asyncio.to_thread(
                client.control.wait_for, lambda: client.control.blocked(tenant) is not None, 15
            )
            assert blocked, "the SDK never saw the block"
            with pytest.raises(Blocked) as caught:
                client.check()
            assert caught.value.reason == "budget_exhausted"

            now = datetime.now(UTC)
            next_month = (now.replace(day=28) + timedelta(days=4)).replace(
                day=1, hour=0, minute=0, second=0, microsecond=0
            )
            clock.at = next_month + timedelta(seconds=1)  # the window ends: the job unblocks
            lifted = await asyncio.to_thread(
                client.control.wait_for, lambda: client.control.blocked(tenant) is None, 15
            )
            assert lifted, "the block was not lifted at the next window"
            client.check()
        finally:
            await asyncio.to_thread(client.shutdown, 10)

    alerts = [
        r for r in await read_records(settings, settings.alerts_topic) if r["record"] == "alert"
    ]
    fired = sorted((a["kind"], a["details"].get("threshold")) for a in alerts)
    assert fired == [
        ("BudgetExhausted", None),
        ("BudgetThresholdCrossed", 0.5),
        ("BudgetThresholdCrossed", 0.8),
    ]
    assert len({a["alert_id"] for a in alerts}) == len(alerts) == 3
    on_control = await read_records(settings, settings.control_topic)
    assert any(c["record"] == "heartbeat" for c in on_control), "the jobs beat (issue 12)"
    controls = [(c["action"], c["reason"]) for c in on_control if c["record"] == "control"]
    assert controls == [("block", "budget_exhausted"), ("unblock", "window_reset")]
