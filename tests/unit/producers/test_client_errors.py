"""Agent exceptions are recorded and re-raised; bad input is counted, never raised."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from agentaudit_sdk import Client, InMemoryTransport
from agentaudit_sdk.pipeline import InvalidEvent

from .conftest import by_type


class Boom(Exception):
    pass


class _Private_Error(Exception):
    pass


def flushed(client: Client, transport: InMemoryTransport) -> list[dict[str, Any]]:
    assert client.flush(10)
    return transport.events


def test_run_stop_reason_error_and_exception_propagates(
    client: Client, transport: InMemoryTransport
) -> None:
    with pytest.raises(Boom), client.run(goal="g"):
        raise Boom()
    finished = by_type(flushed(client, transport))["run_finished"]["payload"]
    assert finished["stop_reason"] == "error"


def test_run_stop_reason_and_steps_set_by_agent(
    client: Client, transport: InMemoryTransport
) -> None:
    with pytest.raises(Boom), client.run(max_steps=3) as run:
        run.stop_reason = "max_steps"
        run.steps = 3
        raise Boom()  # the agent's own reason wins over the inferred "error"
    finished = by_type(flushed(client, transport))["run_finished"]["payload"]
    assert (finished["stop_reason"], finished["steps"]) == ("max_steps", 3)


async def test_async_run_cancelled_and_timeout(
    client: Client, transport: InMemoryTransport
) -> None:
    async def cancelled() -> None:
        async with client.run(run_id="r-cancel"):
            await asyncio.Event().wait()

    task = asyncio.create_task(cancelled())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(TimeoutError):
        async with client.run(run_id="r-timeout"):
            async with asyncio.timeout(0):
                await asyncio.Event().wait()
    assert await client.aflush(10)
    reasons = {
        e["run_id"]: e["payload"]["stop_reason"]
        for e in transport.events
        if e["type"] == "run_finished"
    }
    assert reasons == {"r-cancel": "cancelled", "r-timeout": "timeout"}


def test_llm_and_tool_calls_record_errors_and_reraise(
    client: Client, transport: InMemoryTransport
) -> None:
    with pytest.raises(Boom), client.llm_call("openai", "gpt-4o"):
        raise Boom("rate limited")
    with pytest.raises(_Private_Error), client.tool_call("db", "query", {"sql": "select 1"}):
        raise _Private_Error()
    with client.tool_call("db", "query", {}) as call:
        call.fail("NotFound")  # handled by the agent, still a failed call
    llm, tool, handled = flushed(client, transport)
    assert (llm["payload"]["status"], llm["payload"]["error_type"]) == ("error", "Boom")
    assert llm["payload"]["usage"] == {
        "input_tokens": 0,
        "output_tokens": 0,
        "cached_input_tokens": 0,
        "cache_write_tokens": 0,
        "reasoning_tokens": 0,
    }
    assert (tool["payload"]["status"], tool["payload"]["error_type"]) == ("error", "Private_Error")
    assert handled["payload"]["error_type"] == "NotFound"
    assert client.stats.invalid == 0


def test_invalid_input_is_counted_not_raised(client: Client, transport: InMemoryTransport) -> None:
    client.emit("llm_call", {"provider": "openai"})  # missing required fields
    client.emit("no_such_type", {})
    client.emit("error", {"component": "c", "error_type": "E"}, tenant_id="Not A Slug")
    client.emit("error", object())  # type: ignore[arg-type]
    client.approval_requested("a-1", "refund", risk="apocalyptic")
    with client.bind(tenant_id="acme"):
        client.guardrail_triggered("pii", "flag", 1.5)
    client.error("ok", "Fine")
    events = flushed(client, transport)
    assert [e["payload"]["component"] for e in events] == ["ok"]
    stats = client.stats
    assert stats.invalid == 6 and stats.sent == 1 and stats.enqueued == 7
    assert all(isinstance(e, ValidationError | TypeError) for e in client.recent_errors)
    assert len(client.recent_errors) == 6


@pytest.mark.parametrize(
    "emit",
    [
        # a prompt given as messages (redaction reads strings only), the key at the end
        lambda c, key: c.emit(
            "llm_call",
            {"provider": "openai", "content": {"prompt": [{"role": "user", "content": key}]}},
        ),
        lambda c, key: c.emit("run_started", {}, attributes={"headers": {"x-api-key": key}}),
        lambda c, key: c.policy_decision("r", "ALLOW", "fetch", "x" * 300 + key, "0" * 64),
    ],
    ids=["prompt-as-messages", "nested-attribute", "label-too-long"],
)
def test_an_invalid_event_never_puts_its_values_in_the_log_or_recent_errors(
    make_client: Any,
    transport: InMemoryTransport,
    caplog: pytest.LogCaptureFixture,
    emit: Any,
) -> None:
    """A validation error's text shows the failing value's first and last characters: the
    tail of an API key reached the log line and `recent_errors` (found by the SDK probe)."""
    key = "sk-proj-ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
    client = make_client(transport, kill_switch=False)
    emit(client, key)
    assert flushed(client, transport) == [] and client.stats.invalid == 1
    [error] = client.recent_errors
    assert isinstance(error, ValidationError)
    shown = caplog.text + str(error) + repr(error) + str(error.errors())
    assert "validation error" in caplog.text  # still logged, with the reason
    assert "012345" not in shown and "ABCDEF" not in shown


def test_oversized_event_is_invalid(client: Client, transport: InMemoryTransport) -> None:
    huge = "\N{GRINNING FACE}" * 32_768  # within the char cap, 128 KiB of UTF-8 each
    with client.llm_call("openai", "gpt-4o", content_prompt=huge) as call:
        call.record({"input_tokens": 1, "output_tokens": 1}, response=huge)
    assert flushed(client, transport) == []
    assert client.stats.invalid == 1 and isinstance(client.recent_errors[-1], InvalidEvent)


def test_recent_errors_is_a_bounded_ring(make_client: Any, transport: InMemoryTransport) -> None:
    client = make_client(transport, max_recent_errors=3)
    for _ in range(10):
        client.emit("bogus", {})
    assert client.flush(10)
    assert client.stats.invalid == 10 and len(client.recent_errors) == 3


def test_content_fields_are_redacted_before_leaving(
    client: Client, transport: InMemoryTransport
) -> None:
    with client.llm_call("openai", "gpt-4o", content_prompt="mail bob@example.com") as call:
        call.record({"input_tokens": 1, "output_tokens": 1}, response="sure")
    with client.llm_call("openai", "gpt-4o", content_prompt="nothing to hide"):
        pass
    client.error(
        "auth",
        "Denied",
        "bad key sk-proj-abcdefghijklmnopqrstuvwx0123",
        attributes={"who": "x@y.io", "n": 3},
    )
    redacted, plain, error = flushed(client, transport)
    assert redacted["payload"]["content"] == {
        "handling": "redacted",
        "prompt": "mail [REDACTED:EMAIL]",
        "response": "sure",
    }
    assert plain["payload"]["content"]["handling"] == "plain"
    assert error["payload"]["message"] == "bad key [REDACTED:SECRET]"
    assert error["attributes"] == {"who": "[REDACTED:EMAIL]", "n": 3}


def test_free_text_labels_are_redacted_before_leaving(
    client: Client, transport: InMemoryTransport
) -> None:
    """A policy decision's resource is often a URL and its reason quotes the request: both
    went out as written, API key included (found by the SDK probe)."""
    key = "sk-proj-abcdefghijklmnopqrstuvwx0123"
    client.policy_decision(
        "egress",
        "DENY",
        "GET",
        "https://api.example.com/v1/users?api_key=9f8e7d6c5b4a",
        "0" * 64,
        reason=f"request carried {key}",
    )
    with client.tool_call("http", f"post with Bearer {key}", {}):
        pass
    client.approval_requested("a-1", f"refund for bob@example.com via {key}", "high")
    policy, tool, approval = flushed(client, transport)
    assert (
        policy["payload"]["resource"]
        == "https://api.example.com/v1/users?api_key=[REDACTED:SECRET]"
    )
    assert policy["payload"]["reason"] == "request carried [REDACTED:SECRET]"
    assert policy["payload"]["action"] == "GET"
    assert tool["payload"]["action"] == "post with Bearer [REDACTED:SECRET]"
    assert approval["payload"]["action"] == ("refund for [REDACTED:EMAIL] via [REDACTED:SECRET]")


def test_redaction_can_be_turned_off(make_client: Any, transport: InMemoryTransport) -> None:
    client = make_client(transport, redact=False)
    client.error("auth", "Denied", "mail bob@example.com")
    assert client.flush(10)
    assert transport.events[0]["payload"]["message"] == "mail bob@example.com"


def test_emit_event_accepts_a_built_model(client: Client, transport: InMemoryTransport) -> None:
    from agentaudit_schemas.envelope import Sdk
    from agentaudit_schemas.events import ErrorEvent
    from agentaudit_schemas.payloads import ErrorInfo

    event = ErrorEvent(
        event_id="018f0000-0000-7000-8000-000000000001",
        occurred_at=datetime.now(UTC),
        sdk=Sdk(name="x", version="1"),
        tenant_id="beta",
        agent_id="a",
        agent_version="1",
        trace_id="1" * 32,
        span_id="2" * 16,
        payload=ErrorInfo(component="c", error_type="E", message="call +44 20 7946 0958"),
    )
    client.emit_event(event)
    (wire,) = flushed(client, transport)
    assert wire["event_id"] == event.event_id and wire["tenant_id"] == "beta"
    assert wire["payload"]["message"] == "call [REDACTED:PHONE]"
