"""The kill switch as the agent sees it: helpers refuse blocked work with typed errors."""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from agentaudit_schemas.records import ControlReason
from agentaudit_sdk import (
    AgentAuditError,
    Blocked,
    Client,
    InMemoryTransport,
    NoOpClient,
    RequestBudgetExceeded,
)
from agentaudit_sdk.clock import utc_from_ns
from agentaudit_sdk.kafka import KafkaTransport

from .conftest import FakeClock, by_type
from .test_control import control, request_budget, unblock


def events(client: Client, transport: InMemoryTransport) -> list[dict[str, Any]]:
    assert client.flush(10)
    return transport.events


def test_nothing_blocked_everything_works(client: Client, transport: InMemoryTransport) -> None:
    client.check()
    with client.run(), client.tool_call("search", "q", {}), client.llm_call("openai", "gpt-5"):
        pass
    assert [e["type"] for e in events(client, transport)] == [
        "run_started",
        "llm_call",
        "tool_call",
        "run_finished",
    ]
    assert client.control.stats.refused == 0 and client.control.ready.is_set()


def test_blocked_tenant_refuses_helpers_with_a_typed_error(
    client: Client, transport: InMemoryTransport
) -> None:
    client.control.apply(control("acme"))
    with pytest.raises(Blocked) as refused:
        client.check()
    err = refused.value
    assert isinstance(err, AgentAuditError) and err.code == "blocked"
    assert (err.scope, err.reason, err.runbook) == (
        "tenant=acme",
        "budget_exhausted",
        "runbooks/BudgetExhausted.md",
    )
    assert err.stop_reason == "budget_exhausted" and err.until is None
    text = str(err)
    for part in ("tenant=acme", "budget_exhausted", "runbooks/BudgetExhausted.md", "stop this run"):
        assert part in text
    with pytest.raises(Blocked):
        client.tool_call("search", "q", {}).__enter__()
    with pytest.raises(Blocked), client.llm_call("openai", "gpt-5"):
        raise AssertionError("the body must not run")
    assert events(client, transport) == []  # refused calls emit nothing
    assert client.control.stats.refused == 3


def test_other_tenants_and_agents_are_not_blocked(
    client: Client, transport: InMemoryTransport
) -> None:
    client.control.apply(control("acme", agent_id="other-bot"))
    client.check()  # this client's agent is support-bot
    with client.bind(tenant_id="globex"):
        client.control.apply(control("acme"))
        client.check()
    with pytest.raises(Blocked), client.bind(agent_id="other-bot", tenant_id="globex"):
        client.control.apply(control("globex", agent_id="other-bot"))
        client.check()


def test_a_blocked_tool_refuses_only_that_tool(
    client: Client, transport: InMemoryTransport
) -> None:
    client.control.apply(
        control("acme", agent_id="support-bot", tool="refund", reason=ControlReason.BREAKER_OPEN)
    )
    with client.run():
        with client.tool_call("search", "q", {}):
            pass
        refund = client.tool_call("refund", "create", {"order": 1}, side_effect="write")
        with pytest.raises(Blocked) as refused, refund:
            raise AssertionError("the body must not run")
        assert refused.value.tool == "refund" and "calls to tool 'refund'" in str(refused.value)
    finished = by_type(events(client, transport))["run_finished"]
    assert finished["payload"]["stop_reason"] == "completed"  # the agent handled it
    assert [e["payload"].get("tool") for e in transport.events if e["type"] == "tool_call"] == [
        "search"
    ]


def test_user_scoped_block_follows_the_bound_user(client: Client) -> None:
    client.control.apply(control("acme", user_id="u-1"))
    with client.bind(user_id="u-2"):
        client.check()
    with client.bind(user_id="u-1"), pytest.raises(Blocked):
        client.check()


def test_unblock_and_expiry_lift_the_block(client: Client, clock: FakeClock) -> None:
    client.control.apply(control("acme"))
    with pytest.raises(Blocked):
        client.check()
    client.control.apply(unblock("acme"))
    client.check()
    until = utc_from_ns(clock.ns) + timedelta(seconds=60)
    client.control.apply(control("acme", until=until))
    with pytest.raises(Blocked) as refused:
        client.check()
    assert refused.value.until == until and until.isoformat()[:19] in str(refused.value)
    clock.advance(60)
    client.check()  # the window ended: time, not a record, lifted it
    client.control.apply(control("acme"))
    client.control.clear("tenant=acme")
    client.check()


@pytest.mark.parametrize(
    ("reason", "stop_reason"),
    [
        (ControlReason.BUDGET_EXHAUSTED, "budget_exhausted"),
        (ControlReason.BREAKER_OPEN, "breaker_open"),
        (ControlReason.BREAKER_HALF_OPEN, "breaker_open"),
        (ControlReason.MANUAL, "cancelled"),
    ],
)
def test_blocked_escaping_the_run_sets_its_stop_reason(
    client: Client, transport: InMemoryTransport, reason: ControlReason, stop_reason: str
) -> None:
    with pytest.raises(Blocked), client.run(goal="g") as run:
        with client.llm_call("openai", "gpt-5"):
            pass
        client.control.apply(control("acme", agent_id="support-bot", tool="crm", reason=reason))
        with client.tool_call("crm", "update", {}):
            pass
    assert run.steps == 1
    finished = by_type(events(client, transport))["run_finished"]
    assert finished["payload"]["stop_reason"] == stop_reason


def test_a_run_started_in_a_blocked_scope_is_recorded_and_refused(
    client: Client, transport: InMemoryTransport
) -> None:
    client.control.apply(control("acme", reason=ControlReason.BREAKER_OPEN))
    with pytest.raises(Blocked), client.run(goal="g"):
        raise AssertionError("the body must not run")
    got = events(client, transport)
    assert [e["type"] for e in got] == ["run_started", "run_finished"]
    assert got[1]["payload"]["stop_reason"] == "breaker_open"
    assert got[0]["run_id"] == got[1]["run_id"]
    with client.bind(tenant_id="globex"), client.run():  # the context was restored
        pass


def test_blocked_inside_a_task_group_still_names_the_stop_reason(
    client: Client, transport: InMemoryTransport
) -> None:
    async def agent() -> None:
        async def step() -> None:
            async with client.tool_call("crm", "update", {}):
                pass

        async with client.run(), asyncio.TaskGroup() as group:
            group.create_task(step())

    client.control.apply(control("acme", tool="crm"))
    with pytest.raises(BaseExceptionGroup):
        asyncio.run(agent())
    assert by_type(events(client, transport))["run_finished"]["payload"]["stop_reason"] == (
        "budget_exhausted"
    )


async def test_async_helpers_refuse_before_the_work(
    client: Client, transport: InMemoryTransport
) -> None:
    client.control.apply(control("acme"))
    with pytest.raises(Blocked):
        async with client.llm_call("openai", "gpt-5"):
            raise AssertionError("the body must not run")
    with pytest.raises(Blocked):
        async with client.tool_call("search", "q", {}):
            raise AssertionError("the body must not run")
    assert await client.aflush(10) and transport.events == []


def test_kill_switch_off_checks_nothing(
    make_client: Callable[..., Client], transport: InMemoryTransport
) -> None:
    client = make_client(transport, kill_switch=False)
    client.control.apply(control("acme"))
    client.control.apply_budget(request_budget(max_tokens=1))
    client.check()
    assert client.check_request("openai", "gpt-5", input_tokens=10, max_output_tokens=10) is None
    with client.llm_call("openai", "gpt-5", input_tokens=10, max_output_tokens=10):
        pass


def test_noop_client_checks_nothing() -> None:
    noop = NoOpClient()
    noop.check("tool")
    assert noop.check_request("openai", "gpt-5", input_tokens=1, max_output_tokens=1) is None
    with noop.llm_call("openai", "gpt-5", input_tokens=1, max_output_tokens=1):
        pass


def test_errors_survive_pickling(client: Client) -> None:
    client.control.apply(control("acme"))
    with pytest.raises(Blocked) as refused:
        client.check("crm")
    copy = pickle.loads(pickle.dumps(refused.value))
    assert (copy.scope, copy.reason, copy.tool, str(copy)) == (
        refused.value.scope,
        refused.value.reason,
        "crm",
        str(refused.value),
    )


# -- per-request ceiling ---------------------------------------------------------------------


def test_check_request_refuses_a_call_over_a_request_budget(client: Client) -> None:
    assert client.check_request("openai", "gpt-5", input_tokens=10, max_output_tokens=10) is None
    client.control.apply_budget(request_budget("per-call", max_cost_usd=0.05, max_tokens=20_000))
    ok = client.check_request("openai", "gpt-5", input_tokens=1_000, max_output_tokens=1_000)
    assert ok is not None and ok.tokens == 2_000 and ok.cost_usd == Decimal("0.011250000")
    with pytest.raises(RequestBudgetExceeded) as over:
        client.check_request("openai", "gpt-5", input_tokens=8_000, max_output_tokens=8_000)
    err = over.value
    assert (err.budget, err.limit_kind, err.limit, err.estimate) == (
        "per-call",
        "max_cost_usd",
        Decimal("0.05"),
        Decimal("0.090000000"),
    )
    assert err.stop_reason == "budget_exhausted" and err.code == "request_budget_exceeded"
    for part in ("'per-call'", "max_cost_usd=0.05", "0.090000000 USD", "max_output_tokens"):
        assert part in str(err)
    with client.bind(tenant_id="globex"):  # another tenant's calls are not capped
        assert (
            client.check_request("openai", "gpt-5", input_tokens=8_000, max_output_tokens=8_000)
            is None
        )
    assert client.control.stats.request_refused == 1


def test_request_ceiling_edges_and_user_budgets(client: Client) -> None:
    client.control.apply_budget(request_budget("b-tenant", max_tokens=2_000))
    client.control.apply_budget(request_budget("a-user", max_tokens=1_500, user_id="u-1"))
    kwargs: dict[str, Any] = {"input_tokens": 1_000, "max_output_tokens": 1_000}
    est = client.check_request("openai", "gpt-5", **kwargs)  # exactly at the ceiling: fits
    assert est is not None and est.tokens == 2_000
    with client.bind(user_id="u-1"), pytest.raises(RequestBudgetExceeded) as over:
        client.check_request("openai", "gpt-5", **kwargs)
    assert (over.value.budget, over.value.limit_kind, over.value.limit, over.value.estimate) == (
        "a-user",
        "max_tokens",
        1_500,
        2_000,
    )
    client.control.remove_budget("a-user")
    with client.bind(user_id="u-1"):
        assert client.check_request("openai", "gpt-5", **kwargs) is not None


def test_cached_input_lowers_the_estimate(client: Client) -> None:
    client.control.apply_budget(request_budget(max_cost_usd=0.02))
    kwargs: dict[str, Any] = {"input_tokens": 10_000, "max_output_tokens": 1_000}
    with pytest.raises(RequestBudgetExceeded):
        client.check_request("openai", "gpt-5", **kwargs)  # 10k uncached 0.0125 + out 0.01
    est = client.check_request("openai", "gpt-5", cached_input_tokens=9_000, **kwargs)
    assert est is not None and est.cost_usd == Decimal("0.012375000")  # 0.00125 + 0.001125 + 0.01


def test_unpriced_model_is_counted_and_held_to_tokens(client: Client) -> None:
    client.control.apply_budget(request_budget(max_cost_usd=0.0001, max_tokens=100))
    est = client.check_request("acme-llm", "m-1", input_tokens=10, max_output_tokens=10)
    assert est is not None and est.cost_usd is None
    with pytest.raises(RequestBudgetExceeded):
        client.check_request("acme-llm", "m-1", input_tokens=90, max_output_tokens=20)
    assert client.control.stats.unpriced == 2


def test_llm_call_with_estimates_checks_the_ceiling_before_the_call(
    client: Client, transport: InMemoryTransport
) -> None:
    client.control.apply_budget(request_budget(max_tokens=4_000))
    call = client.llm_call("openai", "gpt-5", input_tokens=3_000, max_output_tokens=2_000)
    with pytest.raises(RequestBudgetExceeded), client.run(), call:
        raise AssertionError("the body must not run")
    finished = by_type(events(client, transport))["run_finished"]
    assert finished["payload"]["stop_reason"] == "budget_exhausted"
    assert "llm_call" not in by_type(transport.events)
    with client.llm_call("openai", "gpt-5", input_tokens=3_000, max_output_tokens=1_000):
        pass
    with pytest.raises(TypeError):
        client.llm_call("openai", "gpt-5", input_tokens=3_000)


def test_a_bug_in_the_check_never_reaches_the_agent(
    client: Client, transport: InMemoryTransport
) -> None:
    client.control.apply_budget(request_budget(max_tokens=4_000))
    with client.llm_call("openai", "gpt-5", input_tokens=-1, max_output_tokens=1):
        pass  # a bad estimate is logged, not raised from inside the helper
    assert [e["type"] for e in events(client, transport)] == ["llm_call"]


# -- the listener's lifecycle on the Kafka transport ------------------------------------------


def test_kafka_client_listens_and_fails_open_without_a_broker() -> None:
    transport = KafkaTransport("127.0.0.1:1", "t", connect_timeout_s=1)
    client = Client(transport, tenant_id="acme", agent_id="bot", reconnect_backoff=(0.05, 0.2))
    try:
        assert client.control.wait_for(lambda: client.control.counters.errors >= 2, 20)
        stats = client.control.stats
        assert stats.listening and not stats.ready and not stats.connected
        assert stats.last_error is not None
        client.check()  # not ready: fail open, the agent keeps working
        client.control.apply(control("acme"))  # what it has, it enforces
        with pytest.raises(Blocked):
            client.check()
    finally:
        assert client.shutdown(10)
    assert not client.control.stats.listening  # the listener task ended with the transport


def test_kafka_client_without_kill_switch_does_not_listen() -> None:
    transport = KafkaTransport("127.0.0.1:1", "t", connect_timeout_s=1)
    client = Client(transport, tenant_id="acme", agent_id="bot", kill_switch=False)
    try:
        assert client.control.ready.is_set() and not client.control.stats.listening
    finally:
        client.shutdown(10)
