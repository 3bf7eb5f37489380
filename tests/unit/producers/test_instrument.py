"""Drop-in instrumentation: the real `openai` and `anthropic` SDKs against a local server that
speaks their APIs (tests/fake_llm.py), events captured through the SDK's real pipeline into
an in-memory transport."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable
from typing import Any

import anthropic
import openai
import pytest

from agentaudit_sdk import Blocked, Client, InMemoryTransport, RequestBudgetExceeded
from agentaudit_sdk.instrument import estimate_prompt_tokens, instrument
from tests.fake_llm import FakeLLM

from .conftest import FakeClock
from .test_control import control, request_budget

MSGS = [{"role": "user", "content": "hi"}]
CHAT_USAGE = {
    "input_tokens": 1200,
    "output_tokens": 50,
    "cached_input_tokens": 1000,
    "cache_write_tokens": 0,
    "reasoning_tokens": 10,
}
RESPONSES_USAGE = {
    "input_tokens": 900,
    "output_tokens": 40,
    "cached_input_tokens": 512,
    "cache_write_tokens": 0,
    "reasoning_tokens": 8,
}
# Anthropic: 100 uncached + 2000 cache reads + 500 cache writes = 2600 input tokens for us
ANTHROPIC_USAGE = {
    "input_tokens": 2600,
    "output_tokens": 60,
    "cached_input_tokens": 2000,
    "cache_write_tokens": 500,
    "reasoning_tokens": 0,
}


class TickingClock(FakeClock):
    """Monotonic time advances 10 ms per read, so latencies are positive and deterministic."""

    def monotonic(self) -> float:
        self.mono += 0.01
        return self.mono


@pytest.fixture
def audit(make_client: Callable[..., Client], transport: InMemoryTransport) -> Client:
    return make_client(transport, clock=TickingClock())


def calls(audit: Client, transport: InMemoryTransport) -> list[dict[str, Any]]:
    assert audit.flush(10)
    return [e for e in transport.events if e["type"] == "llm_call"]


def oai(server: FakeLLM, audit: Client, **bind: Any) -> openai.OpenAI:
    return instrument(
        openai.OpenAI(base_url=server.url + "/v1", api_key="k", max_retries=0), audit=audit, **bind
    )


def anth(server: FakeLLM, audit: Client) -> anthropic.Anthropic:
    return instrument(
        anthropic.Anthropic(base_url=server.url, api_key="k", max_retries=0), audit=audit
    )


def test_openai_chat_records_normalised_usage_served_model_and_latency(
    server: FakeLLM, audit: Client, transport: InMemoryTransport
) -> None:
    client = oai(server, audit, agent_id="triage-bot")
    reply = client.chat.completions.create(model="gpt-5-mini", messages=MSGS)
    assert reply.choices[0].message.content == "Hello there."  # the SDK's own object
    [event] = calls(audit, transport)
    p = event["payload"]
    assert event["agent_id"] == "triage-bot" and event["tenant_id"] == "acme"
    assert (p["provider"], p["request_model"], p["response_model"]) == (
        "openai",
        "gpt-5-mini",
        "gpt-5-mini-2025-08-07",
    )
    assert p["usage"] == CHAT_USAGE  # cached tokens stay inside input_tokens (OpenAI's way)
    assert p["status"] == "ok" and p["finish_reason"] == "stop" and p["latency_ms"] > 0


def test_openai_chat_stream_asks_for_usage_and_hides_the_extra_chunk(
    server: FakeLLM, audit: Client, transport: InMemoryTransport
) -> None:
    plain = openai.OpenAI(base_url=server.url + "/v1", api_key="k", max_retries=0)
    expected = [
        c.model_dump()
        for c in plain.chat.completions.create(model="gpt-5-mini", messages=MSGS, stream=True)
    ]
    stream = oai(server, audit).chat.completions.create(
        model="gpt-5-mini", messages=MSGS, stream=True
    )
    with stream:
        seen = [c.model_dump() for c in stream]
    assert seen == expected  # what the agent sees is unchanged
    assert server.requests[-1][1]["stream_options"] == {"include_usage": True}
    [event] = calls(audit, transport)
    p = event["payload"]
    assert p["usage"] == CHAT_USAGE and p["response_model"] == "gpt-5-mini-2025-08-07"
    assert p["finish_reason"] == "stop" and 0 < p["ttft_ms"] < p["latency_ms"]


def test_openai_stream_whose_caller_asked_for_usage_sees_the_usage_chunk(
    server: FakeLLM, audit: Client, transport: InMemoryTransport
) -> None:
    chunks = list(
        oai(server, audit).chat.completions.create(
            model="gpt-5-mini", messages=MSGS, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert calls(audit, transport)[0]["payload"]["usage"] == CHAT_USAGE


def test_openai_responses_create_and_stream_helper(
    server: FakeLLM, audit: Client, transport: InMemoryTransport
) -> None:
    client = oai(server, audit)
    client.responses.create(model="gpt-5-mini", input="hi")
    with client.responses.stream(model="gpt-5-mini", input="hi") as stream:
        final = stream.get_final_response()
    assert final.output_text == "Sunny in Paris."
    events = calls(audit, transport)
    assert [e["payload"]["usage"] for e in events] == [RESPONSES_USAGE, RESPONSES_USAGE]
    assert {e["payload"]["finish_reason"] for e in events} == {"completed"}
    assert events[0]["payload"].get("ttft_ms") is None and events[1]["payload"]["ttft_ms"] > 0


def test_anthropic_create_stream_and_helper_add_cache_tokens_to_input(
    server: FakeLLM, audit: Client, transport: InMemoryTransport
) -> None:
    client = anth(server, audit)
    args: dict[str, Any] = {"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": MSGS}
    assert client.messages.create(**args).content[0].text == "Hello there."  # type: ignore[union-attr]
    assert [e.type for e in client.messages.create(**args, stream=True)][-1] == "message_stop"
    with client.messages.stream(**args) as stream:
        assert "".join(stream.text_stream) == "Hello there."
    events = calls(audit, transport)
    assert len(events) == 3
    for e in events:
        p = e["payload"]
        assert p["usage"] == ANTHROPIC_USAGE and p["provider"] == "anthropic"
        assert (
            p["response_model"] == "claude-sonnet-4-5-20250929" and p["finish_reason"] == "end_turn"
        )
    assert events[1]["payload"]["ttft_ms"] > 0


def test_async_clients_record_calls_and_streams(
    server: FakeLLM, audit: Client, transport: InMemoryTransport
) -> None:
    async def agent() -> None:
        o = instrument(
            openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="k", max_retries=0), audit=audit
        )
        a = instrument(
            anthropic.AsyncAnthropic(base_url=server.url, api_key="k", max_retries=0), audit=audit
        )
        await o.chat.completions.create(model="gpt-5-mini", messages=MSGS)
        stream = await o.chat.completions.create(model="gpt-5-mini", messages=MSGS, stream=True)
        assert [c async for c in stream][-1].choices[0].finish_reason == "stop"
        await a.messages.create(model="claude-sonnet-4-5", max_tokens=9, messages=MSGS)
        async with a.messages.stream(model="claude-sonnet-4-5", max_tokens=9, messages=MSGS) as s:
            assert "".join([t async for t in s.text_stream]) == "Hello there."

    asyncio.run(agent())
    usages = [e["payload"]["usage"] for e in calls(audit, transport)]
    assert usages == [CHAT_USAGE, CHAT_USAGE, ANTHROPIC_USAGE, ANTHROPIC_USAGE]


def test_provider_error_is_recorded_and_re_raised_unchanged(
    server: FakeLLM, audit: Client, transport: InMemoryTransport
) -> None:
    plain = openai.OpenAI(base_url=server.url + "/v1", api_key="k", max_retries=0)
    with pytest.raises(openai.RateLimitError) as unwrapped:
        plain.chat.completions.create(model="fail-429", messages=MSGS)
    with pytest.raises(openai.RateLimitError) as wrapped:
        oai(server, audit).chat.completions.create(model="fail-429", messages=MSGS)
    assert type(wrapped.value) is type(unwrapped.value)
    assert (wrapped.value.status_code, wrapped.value.body) == (429, unwrapped.value.body)
    # raised where the SDK raised it: no frame of ours sits after the SDK's in the traceback
    last = wrapped.traceback[-1].path.as_posix()  # editable: producers/…; wheel: agentaudit_sdk/…
    assert "producers/instrument" not in last and "agentaudit_sdk/instrument" not in last
    with pytest.raises(anthropic.RateLimitError):
        anth(server, audit).messages.create(model="fail-429", max_tokens=5, messages=MSGS)
    events = calls(audit, transport)
    assert [(e["payload"]["status"], e["payload"]["error_type"]) for e in events] == [
        ("error", "RateLimitError"),
        ("error", "RateLimitError"),
    ]


def test_blocked_tenant_is_refused_before_any_request(
    server: FakeLLM, audit: Client, transport: InMemoryTransport
) -> None:
    audit.control.apply(control("acme"))
    client, a_client = oai(server, audit), anth(server, audit)
    before = server.count
    with pytest.raises(Blocked):
        client.chat.completions.create(model="gpt-5-mini", messages=MSGS)
    with pytest.raises(Blocked):
        client.chat.completions.create(model="gpt-5-mini", messages=MSGS, stream=True)
    with (
        pytest.raises(Blocked),
        a_client.messages.stream(model="claude-sonnet-4-5", max_tokens=5, messages=MSGS),
    ):
        pass
    assert server.count == before and calls(audit, transport) == []
    assert audit.control.stats.refused == 3


def test_request_ceiling_refuses_a_capped_call_before_any_request(
    server: FakeLLM, audit: Client, transport: InMemoryTransport
) -> None:
    audit.control.apply_budget(request_budget(max_tokens=1000))
    client = anth(server, audit)
    before = server.count
    with pytest.raises(RequestBudgetExceeded) as refused:
        client.messages.create(model="claude-sonnet-4-5", max_tokens=4000, messages=MSGS)
    assert refused.value.max_output_tokens == 4000 and server.count == before
    client.messages.create(model="claude-sonnet-4-5", max_tokens=500, messages=MSGS)
    assert server.count == before + 1 and len(calls(audit, transport)) == 1


def test_the_client_stays_the_sdks_own_object(
    server: FakeLLM, audit: Client, transport: InMemoryTransport
) -> None:
    original = openai.OpenAI(base_url=server.url + "/v1", api_key="k", max_retries=0)
    client = oai_same = instrument(original, audit=audit)
    assert client is original and isinstance(oai_same, openai.OpenAI)
    raw = client.chat.completions.with_raw_response.create(model="gpt-5-mini", messages=MSGS)
    assert raw.http_response.status_code == 200 and raw.parse().model == "gpt-5-mini-2025-08-07"
    client.with_options(timeout=5).chat.completions.create(model="gpt-5-mini", messages=MSGS)
    assert [e["payload"]["usage"] for e in calls(audit, transport)] == [CHAT_USAGE, CHAT_USAGE]
    with pytest.raises(ValueError, match="already instrumented"):
        instrument(client, audit=audit)
    with pytest.raises(TypeError):
        instrument(object(), audit=audit)


def test_prompt_estimate_skips_images_and_urls() -> None:
    body = {
        "model": "m" * 400,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "x" * 400},
                    {"type": "image_url", "image_url": {"url": "d" * 10**6}},
                ],
            },
        ],
    }
    assert (
        estimate_prompt_tokens(body)
        == (400 + len("user") + len("text") + len("image_url") + 3) // 4
    )


def test_a_stream_dropped_before_it_was_read_is_still_recorded(
    server: FakeLLM, audit: Client, transport: InMemoryTransport
) -> None:
    """The request was made (and billed) even if the agent never reads the stream: a generator
    that never started runs no `finally`, so only a finalizer on the stream records the call."""
    o, a = oai(server, audit), anth(server, audit)
    before = server.count
    o.chat.completions.create(model="gpt-5-mini", messages=MSGS, stream=True)
    a.messages.create(model="claude-sonnet-4-5", max_tokens=5, messages=MSGS, stream=True)

    async def agent() -> None:
        ao = instrument(
            openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="k", max_retries=0), audit=audit
        )
        await ao.chat.completions.create(model="gpt-5-mini", messages=MSGS, stream=True)

    asyncio.run(agent())
    gc.collect()  # the SDKs' streams hold reference cycles (stream -> generator -> stream)
    assert server.count - before == 3
    assert [e["payload"]["status"] for e in calls(audit, transport)] == ["ok"] * 3


def test_openai_beta_resources_are_recorded_too(
    server: FakeLLM, audit: Client, transport: InMemoryTransport
) -> None:
    """`client.beta.chat.completions` and `client.beta.responses` are resources of their own
    (own `_post`; beta responses post `/responses?beta=true`): their requests were made and
    nothing was recorded (found by the SDK probe: 4 requests, 0 llm_call)."""
    o = oai(server, audit)
    before = server.count
    o.beta.chat.completions.create(model="gpt-5-mini", messages=MSGS)
    o.beta.chat.completions.parse(model="gpt-5-mini", messages=MSGS)
    with o.beta.chat.completions.stream(model="gpt-5-mini", messages=MSGS) as stream:
        list(stream)
    o.beta.responses.create(model="gpt-5-mini", input="hi")
    assert server.count - before == 4
    usages = [e["payload"]["usage"] for e in calls(audit, transport)]
    assert usages == [CHAT_USAGE, CHAT_USAGE, CHAT_USAGE, RESPONSES_USAGE]
