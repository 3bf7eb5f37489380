"""The OpenAI Agents SDK integration driven by the real `agents` Runner: an agent with a
function tool against the local fake server (Responses API), traced by our processor."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import agents  # openai-agents, a pinned test dependency
import openai
import pytest

from agentaudit_sdk import Blocked, Client, InMemoryTransport
from agentaudit_sdk.instrument import instrument
from agentaudit_sdk.instrument.openai_agents import AgentAuditProcessor
from tests.fake_llm import FakeLLM

from .test_control import control

RESPONSES_USAGE = {
    "input_tokens": 900,
    "output_tokens": 40,
    "cached_input_tokens": 512,
    "cache_write_tokens": 0,
    "reasoning_tokens": 8,
}


@pytest.fixture
def audit(make_client: Callable[..., Client], transport: InMemoryTransport) -> Client:
    return make_client(transport)


@pytest.fixture(autouse=True)
def _tracing() -> Iterator[None]:
    yield
    agents.set_trace_processors([])


def run_agent(server: FakeLLM, client: openai.AsyncOpenAI) -> Any:
    weather: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        weather.append(city)
        return "sunny"

    model = agents.OpenAIResponsesModel(model="gpt-5-mini", openai_client=client)
    agent = agents.Agent(
        name="forecaster", instructions="Answer.", tools=[get_weather], model=model
    )
    result = asyncio.run(agents.Runner.run(agent, "Weather in Paris?"))
    assert weather == ["Paris"]
    return result


def test_a_run_with_a_tool_becomes_run_tool_and_llm_events(
    server: FakeLLM, audit: Client, transport: InMemoryTransport
) -> None:
    agents.set_trace_processors([AgentAuditProcessor(audit, side_effects={"get_weather": "read"})])
    client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="k", max_retries=0)
    assert run_agent(server, client).final_output == "Sunny in Paris."
    assert audit.flush(10)
    events = transport.events
    kinds = [e["type"] for e in events]
    assert kinds == ["run_started", "llm_call", "tool_call", "llm_call", "run_finished"]
    started, finished = events[0], events[-1]
    assert started["run_id"] == finished["run_id"] and started["run_id"].startswith("trace_")
    assert {e["run_id"] for e in events} == {started["run_id"]}
    assert {e["trace_id"] for e in events} == {started["trace_id"]}
    assert finished["payload"]["stop_reason"] == "completed" and finished["payload"]["steps"] == 3
    tool = events[2]["payload"]
    assert (tool["tool"], tool["action"], tool["side_effect"], tool["status"]) == (
        "get_weather",
        "get_weather",
        "read",
        "ok",
    )
    from agentaudit_sdk.fields import args_hash

    assert tool["args_hash"] == args_hash({"city": "Paris"})
    for llm in (events[1]["payload"], events[3]["payload"]):
        assert llm["usage"] == RESPONSES_USAGE
        assert llm["response_model"] == "gpt-5-mini-2025-08-07"


def test_blocked_tenant_with_the_agents_client_instrumented(
    server: FakeLLM, audit: Client, transport: InMemoryTransport
) -> None:
    agents.set_trace_processors([AgentAuditProcessor(audit, record_llm_calls=False)])
    client = instrument(
        openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="k", max_retries=0), audit=audit
    )
    audit.control.apply(control("acme"))
    before = server.count
    with pytest.raises(Blocked):
        run_agent(server, client)
    assert server.count == before  # refused before the model was asked
    assert audit.flush(10)
    events = transport.events
    assert [e["type"] for e in events] == ["run_started", "run_finished"]
    assert (
        events[-1]["payload"]["stop_reason"] == "budget_exhausted"
        and events[-1]["payload"]["steps"] == 0
    )
