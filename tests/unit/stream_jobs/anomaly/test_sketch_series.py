"""Log-bucketed histogram and minute accumulators."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import numpy as np
import pytest

from agentaudit.bench.scenarios.events import make_event
from stream_jobs.anomaly.series import INDEX, Metric, MinuteAcc
from stream_jobs.anomaly.sketch import GAMMA, LogHistogram, bucket_of, bucket_value

AT = datetime(2026, 11, 2, 10, 0, 30, tzinfo=UTC)


def test_quantiles_within_one_percent_of_the_exact_sample_quantile() -> None:
    rng = np.random.default_rng(4)
    values = rng.lognormal(6.5, 0.7, 5000)
    h = LogHistogram()
    for v in values:
        h.add(float(v))
    for q in (0.5, 0.9, 0.95, 0.99):
        exact = float(np.quantile(values, q, method="inverted_cdf"))
        assert h.quantile(q) == pytest.approx(exact, rel=(GAMMA - 1) / (GAMMA + 1) + 1e-9)


def test_bucket_value_is_inside_its_bucket_and_zero_has_its_own() -> None:
    for v in (0.003, 1.0, 37.5, 12_345.0):
        b = bucket_of(v)
        assert GAMMA**b <= v < GAMMA ** (b + 1)
        assert GAMMA**b <= bucket_value(b) <= GAMMA ** (b + 1)
    h = LogHistogram()
    h.add(0.0)
    h.add(0.0)
    h.add(10.0)
    assert h.quantile(0.5) == 0.0
    assert h.quantile(1.0) == pytest.approx(10.0, rel=0.01)
    assert math.isnan(LogHistogram().quantile(0.5))


def test_merge_equals_adding_everything_and_state_round_trips() -> None:
    a, b, both = LogHistogram(), LogHistogram(), LogHistogram()
    for i, v in enumerate([5.0, 80.0, 80.5, 900.0, 3.0, 3.01]):
        (a if i % 2 else b).add(v)
        both.add(v)
    a.merge(b)
    assert a.counts == both.counts and a.n == both.n == 6
    again = LogHistogram.from_state(json.loads(json.dumps(a.to_state())))
    assert again.counts == a.counts and again.n == a.n


def _minute() -> MinuteAcc:
    rng = np.random.default_rng(5)
    acc = MinuteAcc()
    events = [
        (
            make_event(
                rng,
                "llm_call",
                AT,
                usage={"input_tokens": 1000, "output_tokens": 200},
                latency_ms=400.0,
            ),
            0.01,
        ),
        (
            make_event(
                rng,
                "llm_call",
                AT,
                usage={"input_tokens": 3000, "output_tokens": 800},
                latency_ms=2000.0,
                status="error",
                error_type="timeout",
            ),
            0.03,
        ),
        (make_event(rng, "tool_call", AT), 0.0),
        (make_event(rng, "tool_call", AT, status="error", error_type="http_500"), 0.0),
        (make_event(rng, "policy_decision", AT, decision="DENY"), 0.0),
        (make_event(rng, "policy_decision", AT), 0.0),
        (make_event(rng, "policy_decision", AT), 0.0),
        (make_event(rng, "policy_decision", AT), 0.0),
        (make_event(rng, "guardrail_triggered", AT), 0.0),
        (make_event(rng, "approval_decided", AT, latency_ms=30_000.0), 0.0),
        (make_event(rng, "error", AT), 0.0),
        (make_event(rng, "run_started", AT), 0.0),
    ]
    for event, cost in events:
        acc.add(event, cost)
    return acc


def test_minute_values_from_real_events() -> None:
    values, supports = _minute().vector()
    v = dict(zip(Metric, values, strict=True))
    assert v[Metric.SPEND] == pytest.approx(0.04)
    assert v[Metric.CALLS] == 4  # 2 LLM + 2 tool calls
    assert v[Metric.TOKENS_PER_CALL] == 2500  # (1200 + 3800) / 2
    assert v[Metric.ERROR_RATE] == pytest.approx(3 / 5)  # 2 failed calls + 1 error event
    assert v[Metric.DENY_RATE] == 0.25
    assert v[Metric.GUARDRAIL_TRIGGERS] == 1
    assert v[Metric.LATENCY_P95] == pytest.approx(2000.0, rel=0.01)
    assert v[Metric.APPROVAL_LATENCY] == pytest.approx(30_000.0, rel=0.01)
    assert supports[INDEX[Metric.ERROR_RATE]] == 5
    assert supports[INDEX[Metric.DENY_RATE]] == 4


def test_undefined_ratios_are_nan_and_state_round_trips() -> None:
    empty = MinuteAcc()
    values, _ = empty.vector()
    assert values[INDEX[Metric.CALLS]] == 0 and values[INDEX[Metric.SPEND]] == 0
    ratios = (Metric.TOKENS_PER_CALL, Metric.ERROR_RATE, Metric.DENY_RATE, Metric.LATENCY_P95)
    assert all(math.isnan(values[INDEX[m]]) for m in ratios)
    acc = _minute()
    again = MinuteAcc.from_state(json.loads(json.dumps(acc.to_state())))
    assert again.vector() == acc.vector()
    doubled = _minute()
    doubled.merge(acc)
    assert doubled.vector()[0][INDEX[Metric.CALLS]] == 8
