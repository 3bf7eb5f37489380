"""`client.action(...)` links an action's decision, approval and execution by one span."""

from __future__ import annotations

from typing import Any

import pytest

from agentaudit_schemas.events import parse_event
from agentaudit_sdk import Blocked, Client, InMemoryTransport
from agentaudit_sdk.fields import args_hash

from .conftest import FakeClock

HASH = "cd" * 32


def events_of(client: Client, transport: InMemoryTransport) -> list[dict[str, Any]]:
    assert client.flush(10)
    for _, value in transport.records:
        parse_event(value)  # the sink accepts exactly these bytes
    return transport.events


def test_decision_approval_and_execution_share_the_action_span(
    client: Client, transport: InMemoryTransport, clock: FakeClock
) -> None:
    with (
        client.run(goal="refund") as run,
        client.action(
            "payments",
            "refund",
            {"order": 123},
            resource="order/123",
            side_effect="write",
            idempotency_key="refund-123",
        ) as act,
    ):
        assert act.decide("refunds-over-100", "REQUIRE_APPROVAL", HASH, "over limit") == (
            "REQUIRE_APPROVAL"
        )
        act.request_approval("apr-1", "high")
        clock.advance(2.0)
        act.approval_decided("alice", "approved", 2000.0)
        with act.execute():
            clock.advance(0.25)
    events = events_of(client, transport)
    by = {e["type"]: e for e in events}
    run_span = by["run_started"]["span_id"]
    action_id = act.action_id
    assert len(action_id) == 16 and action_id != run_span
    for kind in ("policy_decision", "approval_requested", "approval_decided"):
        assert by[kind]["parent_span_id"] == action_id, kind
        assert (
            by[kind]["run_id"] == run.run_id
            and by[kind]["trace_id"] == by["run_started"]["trace_id"]
        )
    call = by["tool_call"]
    assert call["span_id"] == action_id and call["parent_span_id"] == run_span
    assert call["payload"]["args_hash"] == args_hash({"order": 123})
    assert call["payload"]["side_effect"] == "write"
    assert call["payload"]["idempotency_key"] == "refund-123"
    assert call["payload"]["latency_ms"] == pytest.approx(250.0)
    decision = by["policy_decision"]["payload"]
    assert (decision["action"], decision["resource"]) == ("refund", "order/123")
    assert by["approval_decided"]["payload"]["approval_id"] == "apr-1"
    assert by["run_finished"]["payload"]["steps"] == 1  # the execution is the run's one step


def test_a_denied_action_is_its_decision_alone(
    client: Client, transport: InMemoryTransport
) -> None:
    with client.run(), client.action("shell", "rm -rf", {"path": "/"}) as act:
        act.decide("no-destructive", "DENY", HASH, "destructive")
    events = events_of(client, transport)
    assert [e["type"] for e in events] == ["run_started", "policy_decision", "run_finished"]
    assert events[1]["parent_span_id"] == act.action_id
    assert events[1]["payload"]["resource"] == "shell"  # resource defaults to the tool


def test_events_inside_the_execution_stay_under_the_action(
    client: Client, transport: InMemoryTransport
) -> None:
    with client.run(), client.action("search", "query", {"q": "x"}) as act, act.execute():
        client.error("search", "timeout")
    events = events_of(client, transport)
    error = next(e for e in events if e["type"] == "error")
    assert error["parent_span_id"] == act.action_id


def test_execution_is_refused_by_the_kill_switch(
    client: Client, transport: InMemoryTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    def blocked(tool: str | None = None) -> None:
        if tool == "payments":
            raise Blocked(scope="tenant=acme", reason="breaker_open", message="open", tool=tool)

    monkeypatch.setattr(client, "check", blocked)
    with client.run(), client.action("payments", "refund", {}) as act:
        act.decide("r", "ALLOW", HASH)
        with pytest.raises(Blocked), act.execute():
            pytest.fail("the blocked tool ran")  # pragma: no cover
    types = [e["type"] for e in events_of(client, transport)]
    assert "tool_call" not in types and "policy_decision" in types
