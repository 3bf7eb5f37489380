"""Drop-in instrumentation end to end: wrapped openai and anthropic clients against the local
fake server, through the real broker and sink into the store, with usage and cost."""

from __future__ import annotations

import asyncio

import anthropic
import openai
import pytest

from agentaudit.broker import ensure_topics
from agentaudit.settings import Settings
from agentaudit.store import open_store
from agentaudit.store.migrations import migrate
from agentaudit_sdk import Client
from agentaudit_sdk.instrument import instrument
from tests.fake_llm import FakeLLM
from tests.integration.helpers import assert_chains_valid, sink_until

pytestmark = pytest.mark.integration

MSGS = [{"role": "user", "content": "hi"}]


def _agent(settings: Settings, server: FakeLLM) -> int:
    audit = Client.from_settings(
        settings, tenant_id="acme", agent_id="support-bot", kill_switch=False
    )
    o = instrument(
        openai.OpenAI(base_url=server.url + "/v1", api_key="k", max_retries=0), audit=audit
    )
    a = instrument(
        anthropic.Anthropic(base_url=server.url, api_key="k", max_retries=0), audit=audit
    )
    o.chat.completions.create(model="gpt-5-mini", messages=MSGS)
    with a.messages.stream(model="claude-sonnet-4-5", max_tokens=100, messages=MSGS) as s:
        s.until_done()
    assert audit.flush(30, delivered=True)
    sent = audit.stats.sent
    audit.shutdown(5)
    return sent


async def test_wrapped_calls_land_in_the_store_with_usage_and_cost(settings: Settings) -> None:
    await ensure_topics(settings)
    with FakeLLM() as server:
        assert await asyncio.to_thread(_agent, settings, server) == 2
    with open_store(settings, own=True) as store:
        migrate(store)
        await sink_until(settings, store, lambda w: w.processor.counters.accepted >= 2)
        rows = store.query(
            "SELECT provider, request_model, response_model, input_tokens, output_tokens, "
            "cached_input_tokens, cache_write_tokens, reasoning_tokens, status, priced, "
            "toString(cost_usd) FROM agentaudit.events WHERE type = 'llm_call' ORDER BY provider"
        ).result_rows
        # By hand, USD per million tokens. claude-sonnet-4-5: 100 uncached x 3 + 2000 cache
        # reads x 0.30 + 500 cache writes x 3.75 + 60 output x 15 = 3675 -> 0.003675.
        # gpt-5-mini: 200 uncached x 0.25 + 1000 cached x 0.025 + 50 output x 2 = 175.
        assert [tuple(r) for r in rows] == [
            (
                "anthropic",
                "claude-sonnet-4-5",
                "claude-sonnet-4-5-20250929",
                2600,
                60,
                2000,
                500,
                0,
                "ok",
                True,
                "0.003675",
            ),
            (
                "openai",
                "gpt-5-mini",
                "gpt-5-mini-2025-08-07",
                1200,
                50,
                1000,
                0,
                10,
                "ok",
                True,
                "0.000175",
            ),
        ]
        assert assert_chains_valid(store) == 2
