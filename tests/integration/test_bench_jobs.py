"""The stream-job measurements of `agentaudit bench` at a tiny size against the real broker,
so they keep working. No timing assertions: only that the figures are sane."""

from __future__ import annotations

import asyncio

import pytest

from agentaudit.bench.jobs_measure import measure_budget_propagation, measure_stream_jobs
from agentaudit.bench.measure import measure_sdk
from agentaudit.broker import ensure_topics
from agentaudit.settings import Settings

pytestmark = pytest.mark.integration


async def test_stream_jobs_read_what_the_sdk_produced(settings: Settings) -> None:
    await ensure_topics(settings)
    await asyncio.to_thread(measure_sdk, settings, 300)

    figures = await measure_stream_jobs(settings, 300, timeout=60)

    assert figures.rate > 0
    assert figures.cpu_us_per_event > 0
    assert figures.cores > 0
    assert figures.ready_s > 0


async def test_budget_crossing_is_refused_and_overshoot_is_counted(settings: Settings) -> None:
    result = await measure_budget_propagation(settings, 2, 500.0, lead_s=0.2, round_timeout_s=20)

    assert [r.tenant for r in result.rounds] == ["bench-budget-0", "bench-budget-1"]
    assert result.tenant_rate == 100.0 and result.limit_usd > 0
    for r in result.rounds:
        assert 0 < r.delay_ms < 20_000  # the refusal follows the crossing event
        assert 0 <= r.overshoot_calls < r.calls
        assert (r.overshoot_usd > 0) == (r.overshoot_calls > 0)
    assert result.delay_ms(0.5) <= result.delay_ms(0.99) <= max(r.delay_ms for r in result.rounds)
    assert result.max_overshoot_usd >= result.mean_overshoot_usd >= 0
    assert result.percent_of_limit(result.limit_usd) == pytest.approx(100.0)
