"""The labelled scenario generator: seeded, labelled, and equal to the event path."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from agentaudit.bench.scenarios.events import make_event
from agentaudit.bench.scenarios.inject import RAMP_HOLD, Injection, Scenario, schedule
from agentaudit.bench.scenarios.suites import FLEET, START, suites
from agentaudit.bench.scenarios.traffic import Effects, TenantProfile, simulate
from stream_jobs.anomaly.series import INDEX, Metric, MinuteAcc
from stream_jobs.anomaly.sketch import bucket_value
from stream_jobs.anomaly.timebase import minute_start


def _vectors(accs: list[MinuteAcc]) -> list[tuple[list[float], list[int]]]:
    return [a.vector() for a in accs]


def test_same_seed_same_traffic_other_seed_other_traffic() -> None:
    p = FLEET[1]
    a = simulate(p, START, 120, Effects(120), seed=1)
    b = simulate(p, START, 120, Effects(120), seed=1)
    c = simulate(p, START, 120, Effects(120), seed=2)
    va, vb = (np.array([v for v, _ in _vectors(x)]) for x in (a, b))
    assert np.array_equal(va, vb, equal_nan=True)
    assert [x.n_llm for x in a] != [x.n_llm for x in c]


def test_volume_and_rates_follow_the_profile() -> None:
    p = TenantProfile("t", 50, diurnal_amplitude=0.0, overdispersion=0.01, error_p=0.05, deny_p=0.2)
    accs = simulate(p, START, 600, Effects(600), seed=3)
    calls = np.array([a.n_llm + a.n_tool for a in accs])
    assert calls.mean() == pytest.approx(50, rel=0.03)
    assert sum(a.n_failed for a in accs) / calls.sum() == pytest.approx(0.05, rel=0.1)
    assert sum(a.n_deny for a in accs) / sum(a.n_policy for a in accs) == pytest.approx(
        0.2, rel=0.1
    )
    tpc = sum(a.tokens for a in accs) / sum(a.n_llm for a in accs)
    assert tpc == pytest.approx(1500 * np.exp(0.8**2 / 2), rel=0.05)  # log-normal mean


def test_injections_change_their_driver_only_inside_their_interval() -> None:
    effects = Effects(400)
    Injection("t", Metric.CALLS, "spike", 100, 3, 4.0).apply(effects)
    Injection("t", Metric.ERROR_RATE, "level_shift", 200, 50, 0.2).apply(effects)
    ramp = Injection("t", Metric.LATENCY_P95, "ramp", 300, 40, 3.0)
    ramp.apply(effects)
    assert (
        effects.rate[99] == 1
        and effects.rate[100:103].tolist() == [4, 4, 4]
        and effects.rate[103] == 1
    )
    assert effects.error_add[199] == 0 and effects.error_add[249] == pytest.approx(0.2)
    assert effects.error_add[250] == 0
    assert ramp.end == 340 + RAMP_HOLD
    assert effects.latency[300] == pytest.approx(1 + 2 / 40) and effects.latency[
        339
    ] == pytest.approx(3)
    assert effects.latency[350] == pytest.approx(3) and effects.price.tolist() == [1.0] * 400
    assert ramp.kind == "LatencyAnomaly"


def test_labels_are_spaced_and_deterministic() -> None:
    a = schedule(FLEET[:2], 300, 2880, 300, seed=4)
    assert a == schedule(FLEET[:2], 300, 2880, 300, seed=4)
    for t in ("t-small", "t-mid"):
        starts = [j.start for j in a if j.tenant_id == t]
        assert starts == sorted(starts) and min(np.diff(starts)) > 300 - 100
    names = [s.name for s in suites("test")]
    assert names == ["normal", "injected", "seasonal"]
    assert suites("test")[0].injections == ()


def test_the_event_path_and_the_aggregate_path_agree() -> None:
    """A simulated minute turned into real events sums back to the same metric values."""
    rng = np.random.default_rng(5)
    acc = simulate(FLEET[0], START, 1, Effects(1), seed=6)[0]
    rebuilt = MinuteAcc()
    at = minute_start(START) + timedelta(seconds=1)
    per_call = acc.tokens // max(acc.n_llm, 1)
    latencies = [v for b, c in acc.latency.items() for v in [b] * c]
    for i in range(acc.n_llm):
        tokens = per_call + (acc.tokens - per_call * acc.n_llm if i == 0 else 0)
        event = make_event(
            rng,
            "llm_call",
            at,
            usage={"input_tokens": tokens, "output_tokens": 0},
            latency_ms=bucket_value(latencies[i]),
            status="error" if i < acc.n_failed else "ok",
        )
        rebuilt.add(event, acc.spend / acc.n_llm)
    for i in range(acc.n_tool):
        failed = acc.n_llm + i < acc.n_failed  # failures beyond the LLM calls fall on tools
        rebuilt.add(make_event(rng, "tool_call", at, status="error" if failed else "ok"), 0.0)
    for i in range(acc.n_policy):
        rebuilt.add(
            make_event(rng, "policy_decision", at, decision="DENY" if i < acc.n_deny else "ALLOW"),
            0.0,
        )
    for _ in range(acc.n_guardrail):
        rebuilt.add(make_event(rng, "guardrail_triggered", at), 0.0)
    got, want = rebuilt.vector()[0], acc.vector()[0]
    for m in (
        Metric.CALLS,
        Metric.TOKENS_PER_CALL,
        Metric.DENY_RATE,
        Metric.GUARDRAIL_TRIGGERS,
        Metric.LATENCY_P95,
    ):
        assert got[INDEX[m]] == pytest.approx(want[INDEX[m]], rel=1e-9), m
    assert got[INDEX[Metric.SPEND]] == pytest.approx(want[INDEX[Metric.SPEND]])
    assert got[INDEX[Metric.ERROR_RATE]] == pytest.approx(want[INDEX[Metric.ERROR_RATE]])


def test_scenario_traffic_contains_its_injections() -> None:
    inj = Injection("t-mid", Metric.CALLS, "level_shift", 200, 60, 3.0)
    sc = Scenario("x", START, 400, (FLEET[1],), (inj,), seed=7)
    calls = np.array([a.n_llm + a.n_tool for a in sc.traffic(0)])
    assert calls[200:260].mean() > 2.4 * calls[100:200].mean()
    assert sc.tenant_days == pytest.approx(400 / 1440)
