"""Every helper produces a valid event of the right type, with context and trace fields."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import pytest

from agentaudit_schemas.events import parse_event
from agentaudit_schemas.payloads import Usage
from agentaudit_sdk import Client, InMemoryTransport

from .conftest import FakeClock, by_type

HASH = "ab" * 32


def events_of(client: Client, transport: InMemoryTransport) -> list[dict[str, Any]]:
    assert client.flush(10)
    for _, value in transport.records:
        parse_event(value)  # the wire bytes are what the sink will accept
    return transport.events


def test_every_helper_emits_a_valid_event_with_context(
    client: Client, transport: InMemoryTransport
) -> None:
    bound = client.bind(user_id="u-42", session_id="s-1", attributes={"region": "eu"})
    with bound, client.run(goal="answer the ticket", max_steps=10) as run:
        with client.llm_call("openai", "gpt-4o", content_prompt="hi") as call:
            usage = Usage(input_tokens=100, output_tokens=20, cached_input_tokens=40)
            call.record(
                usage,
                response_model="gpt-4o-2024-08-06",
                finish_reason="stop",
                ttft_ms=12.5,
                provider_cost_usd=0.001,
                response="hello",
            )
        with client.tool_call(
            "zendesk", "update_ticket", {"id": 7}, side_effect="write", idempotency_key="k-1"
        ):
            pass
        client.policy_decision("no-pii", "ALLOW", "update_ticket", "ticket/7", HASH, reason="ok")
        client.approval_requested("ap-1", "refund", "high")
        client.approval_decided("ap-1", "alice", "approved", 1200.0)
        client.guardrail_triggered("prompt_injection", "block", 0.93)
        client.eval_result("gold-1", "case-9", "exact_match", 0.8, True, "judge-v1")
        client.error("retriever", "TimeoutError", "upstream timed out")
    events = events_of(client, transport)
    types = [event["type"] for event in events]
    assert types == [
        "run_started",
        "llm_call",
        "tool_call",
        "policy_decision",
        "approval_requested",
        "approval_decided",
        "guardrail_triggered",
        "eval_result",
        "error",
        "run_finished",
    ]
    for event in events:
        assert event["tenant_id"] == "acme" and event["agent_id"] == "support-bot"
        assert event["user_id"] == "u-42" and event["session_id"] == "s-1"
        assert event["run_id"] == run.run_id
        assert event["attributes"] == {"region": "eu"}
        assert event["sdk"]["name"] == "agentaudit-python"
    found = by_type(events)
    assert found["run_started"]["payload"] == {
        "goal_hash": hashlib.sha256(b"answer the ticket").hexdigest(),
        "max_steps": 10,
    }
    llm = found["llm_call"]["payload"]
    assert (
        llm["usage"]["cached_input_tokens"] == 40 and llm["response_model"] == "gpt-4o-2024-08-06"
    )
    assert llm["content"] == {"handling": "plain", "prompt": "hi", "response": "hello"}
    tool = found["tool_call"]["payload"]
    assert tool["args_hash"] == hashlib.sha256(b'{"id":7}').hexdigest()
    assert (
        tool["side_effect"] == "write"
        and tool["idempotency_key"] == "k-1"
        and tool["status"] == "ok"
    )
    assert found["run_finished"]["payload"]["stop_reason"] == "completed"
    assert found["run_finished"]["payload"]["steps"] == 2  # one llm call + one tool call


def test_trace_tree_run_spans_and_fresh_traces(
    client: Client, transport: InMemoryTransport
) -> None:
    with client.run() as run:
        with client.tool_call("search", "query", {"q": "x"}):
            client.guardrail_triggered("pii", "flag", 0.5)
        client.error("planner", "Oops")
    client.error("outside", "Oops")
    client.error("outside", "Oops")
    started, guardrail, tool, error, finished, out1, out2 = events_of(client, transport)
    assert {e["trace_id"] for e in (started, guardrail, tool, error, finished)} == {run.trace_id}
    assert started["span_id"] == finished["span_id"] == run.span_id
    assert "parent_span_id" not in started
    assert tool["parent_span_id"] == run.span_id and error["parent_span_id"] == run.span_id
    assert guardrail["parent_span_id"] == tool["span_id"]  # emitted inside the tool call
    assert len({started["span_id"], tool["span_id"], guardrail["span_id"], error["span_id"]}) == 4
    assert out1["trace_id"] != out2["trace_id"] and run.trace_id not in (
        out1["trace_id"],
        out2["trace_id"],
    )
    assert "parent_span_id" not in out1 and "run_id" not in out1
    for event in (started, out1):
        assert len(event["trace_id"]) == 32 and len(event["span_id"]) == 16


def test_nested_binds_merge_and_restore(client: Client, transport: InMemoryTransport) -> None:
    with client.bind(tenant_id="t-one", user_id="u1", attributes={"a": 1}):
        with client.bind(user_id="u2", session_id="s2", attributes={"b": "x"}):
            client.error("c", "inner")
        client.error("c", "middle")
    client.error("c", "outer")
    inner, middle, outer = events_of(client, transport)
    assert (inner["tenant_id"], inner["user_id"], inner["session_id"]) == ("t-one", "u2", "s2")
    assert inner["attributes"] == {"a": 1, "b": "x"}
    assert (middle["tenant_id"], middle["user_id"], middle.get("session_id")) == (
        "t-one",
        "u1",
        None,
    )
    assert middle["attributes"] == {"a": 1}
    assert (outer["tenant_id"], outer.get("user_id"), outer["attributes"]) == ("acme", None, {})


async def test_binds_are_per_task(client: Client, transport: InMemoryTransport) -> None:
    import asyncio

    async def agent(user: str) -> None:
        async with client.bind(user_id=user):
            await asyncio.sleep(0)  # interleave the two tasks
            async with client.tool_call("t", "a", {"u": user}):
                await asyncio.sleep(0)

    await asyncio.gather(agent("alice"), agent("bob"))
    assert await client.aflush(10)
    hashes = {e["user_id"]: e["payload"]["args_hash"] for e in transport.events}
    assert hashes == {
        u: hashlib.sha256(orjson.dumps({"u": u})).hexdigest() for u in ("alice", "bob")
    }


def test_envelope_overrides_and_timestamps(
    client: Client, transport: InMemoryTransport, clock: FakeClock
) -> None:
    client.error("c", "E", tenant_id="other", attributes={"k": "v"}, variant="canary")
    (event,) = events_of(client, transport)
    assert (
        event["tenant_id"] == "other"
        and event["variant"] == "canary"
        and event["attributes"] == {"k": "v"}
    )
    assert event["occurred_at"] == "2026-01-01T00:00:00.123456Z"
    assert event["event_id"][14] == "7"  # UUIDv7, canonical lower-case form
    assert transport.records[0][0] == b"other"  # Kafka key = tenant


def test_latency_and_duration_come_from_the_injected_clock(
    client: Client, transport: InMemoryTransport, clock: FakeClock
) -> None:
    with client.run():
        clock.advance(0.5)
        with client.llm_call("anthropic", "claude-sonnet-4") as call:
            clock.advance(1.25)
            call.record({"input_tokens": 5, "output_tokens": 1}, ttft_ms=300.0)
        clock.advance(0.25)
    found = by_type(events_of(client, transport))
    assert found["llm_call"]["payload"]["latency_ms"] == pytest.approx(1250.0)
    assert found["run_finished"]["payload"]["duration_ms"] == pytest.approx(2000.0)


def test_an_oversized_prompt_is_left_out_and_named_and_the_call_kept(
    client: Client, transport: InMemoryTransport
) -> None:
    """Before, a prompt over the contract's 32,768 characters failed the whole event: the
    call's usage and cost never reached the trail (`stats.invalid` 1, nothing sent)."""
    from agentaudit_schemas.payloads import MAX_CONTENT_CHARS

    with client.llm_call("openai", "gpt-4o", content_prompt="x" * (MAX_CONTENT_CHARS + 1)) as call:
        call.record(Usage(input_tokens=9000, output_tokens=20), response="short answer")
    (event,) = events_of(client, transport)
    assert client.stats.invalid == 0
    assert event["payload"]["usage"]["input_tokens"] == 9000
    assert event["payload"]["content"] == {"handling": "plain", "response": "short answer"}
    assert event["attributes"]["agentaudit.content_omitted"] == (
        f"prompt over {MAX_CONTENT_CHARS} chars"
    )
    # exactly at the limit: kept whole
    with client.llm_call("openai", "gpt-4o", content_prompt="y" * MAX_CONTENT_CHARS) as call:
        call.record(Usage(input_tokens=1, output_tokens=1))
    last = events_of(client, transport)[-1]
    assert len(last["payload"]["content"]["prompt"]) == MAX_CONTENT_CHARS
    assert "agentaudit.content_omitted" not in last.get("attributes", {})
