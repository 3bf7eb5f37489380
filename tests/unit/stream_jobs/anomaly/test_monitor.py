"""The per-tenant monitor: alerts, cold start, cooldown, grace, replay and restore.

Time is injected: minutes are fed with `ingest_minute` / `observe` and closed with an
explicit `now`; nothing sleeps.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from agentaudit.bench.scenarios.events import make_event
from agentaudit_schemas.records import Alert, record_id
from stream_jobs.anomaly import AnomalyConfig, AnomalyMonitor, Metric, MinuteAcc
from stream_jobs.anomaly.timebase import minute_label, minute_of, minute_start

T0 = datetime(2026, 11, 2, tzinfo=UTC)
START = minute_of(T0)
GRACE = AnomalyConfig().grace_minutes
RNG = np.random.default_rng(0)


def steady(seed: int, calls: Callable[[int], float] = lambda m: 60.0) -> Callable[[int], MinuteAcc]:
    """Minute sums of a calm tenant; `calls(minute)` sets the expected volume."""
    rng = np.random.default_rng(seed)

    def make(m: int) -> MinuteAcc:
        acc = MinuteAcc()
        n = int(rng.poisson(calls(m)))
        acc.n_llm, acc.n_tool = n * 2 // 3, n - n * 2 // 3
        acc.tokens = int(acc.n_llm * rng.normal(1500, 60))
        acc.spend = acc.tokens * 2e-6
        acc.n_failed = int(rng.binomial(n, 0.02))
        acc.n_policy = n // 3
        acc.n_deny = int(rng.binomial(acc.n_policy, 0.05))
        for v in rng.lognormal(6.8, 0.3, acc.n_llm):
            acc.latency.add(float(v))
        return acc

    return make


def feed(monitor: AnomalyMonitor, minutes: range, make: Callable[[int], MinuteAcc]) -> list[Alert]:
    alerts: list[Alert] = []
    for m in minutes:
        monitor.ingest_minute(START + m, make(m))
        alerts += monitor.close_until(minute_start(START + m + 1 + GRACE))
    return alerts


def spikes(at: tuple[int, ...], factor: float = 5.0, width: int = 2) -> Callable[[int], float]:
    return lambda m: 60.0 * (factor if any(a <= m < a + width for a in at) else 1.0)


def test_a_spike_raises_one_alert_with_everything_on_call_needs() -> None:
    monitor = AnomalyMonitor("acme", AnomalyConfig())
    alerts = feed(monitor, range(300), steady(1, spikes((240,))))
    calls = [a for a in alerts if a.kind == "CallVolumeAnomaly"]
    assert len(calls) == 1
    a = calls[0]
    assert minute_of(a.window_start) == START + 240
    assert a.window == minute_label(START + 240) and a.window_end - a.window_start == timedelta(
        minutes=1
    )
    assert a.alert_id == record_id("CallVolumeAnomaly", "tenant=acme", START + 240)
    assert a.runbook == "runbooks/CallVolumeAnomaly.md"
    assert a.baseline is not None and 50 < a.baseline < 70 and a.observed > 3 * a.baseline
    assert a.score is not None and a.score > 6
    assert a.scope.tenant_id == "acme" and a.scope.agent_id is None
    assert "Tenant acme" in a.message and "rose to" in a.message
    assert a.details["detector"] in ("mad", "ewma") and a.details["metric"] == "calls"
    # Spend rises with the calls; nothing else moved.
    assert {x.kind for x in alerts} <= {"CallVolumeAnomaly", "SpendAnomaly"}


def test_cold_start_keeps_the_first_hours_quiet() -> None:
    monitor = AnomalyMonitor("acme", AnomalyConfig())
    assert feed(monitor, range(170), steady(2, spikes((100,), factor=8))) == []


def test_cooldown_suppresses_a_repeat_within_the_hour_but_not_after() -> None:
    within = feed(
        AnomalyMonitor("acme", AnomalyConfig()), range(330), steady(3, spikes((240, 270)))
    )
    after = feed(AnomalyMonitor("acme", AnomalyConfig()), range(330), steady(3, spikes((240, 310))))
    assert [minute_of(a.window_start) - START for a in within if a.kind == "CallVolumeAnomaly"] == [
        240
    ]
    assert [minute_of(a.window_start) - START for a in after if a.kind == "CallVolumeAnomaly"] == [
        240,
        310,
    ]


def test_a_drop_in_volume_alerts_downwards() -> None:
    alerts = feed(
        AnomalyMonitor("acme", AnomalyConfig()),
        range(280),
        steady(4, lambda m: 4.0 if m >= 250 else 60.0),
    )
    drop = [a for a in alerts if a.kind == "CallVolumeAnomaly"]
    assert len(drop) == 1 and drop[0].score is not None and drop[0].score < 0
    assert "fell to" in drop[0].message


def test_minutes_close_only_after_the_grace_period() -> None:
    monitor = AnomalyMonitor("acme", AnomalyConfig())
    monitor.ingest_minute(START, steady(5)(0))
    monitor.close_until(minute_start(START + 1 + GRACE) - timedelta(seconds=1))
    assert monitor.series[""].closed_until == START - 1
    monitor.close_until(minute_start(START + 1 + GRACE))
    assert monitor.series[""].closed_until == START


def test_late_events_are_counted_not_applied_and_replays_are_skipped() -> None:
    rng = np.random.default_rng(6)
    monitor = AnomalyMonitor("acme", AnomalyConfig())
    at = T0 + timedelta(seconds=10)
    assert monitor.observe(make_event(rng, "llm_call", at), 0.01, partition=0, offset=5)
    assert not monitor.observe(make_event(rng, "llm_call", at), 0.01, partition=0, offset=5)
    assert not monitor.observe(make_event(rng, "llm_call", at), 0.01, partition=0, offset=4)
    assert monitor.series[""].open[START].n_llm == 1
    monitor.close_until(minute_start(START + 1 + GRACE))
    assert monitor.observe(make_event(rng, "llm_call", at), 0.01, partition=0, offset=6)
    assert monitor.late_events == 1
    assert monitor.watermark == at


@pytest.mark.parametrize("apart", [False, True])
def test_restored_state_makes_the_same_decisions_as_an_uninterrupted_run(apart: bool) -> None:
    config = AnomalyConfig()
    make_a, make_b = steady(7, spikes((250, 330))), steady(7, spikes((250, 330)))
    straight = feed(AnomalyMonitor("acme", config), range(1900), make_a)
    first = AnomalyMonitor("acme", config)
    alerts = feed(first, range(1507), make_b)
    if apart:  # hot state every batch, hourly profiles in their own table
        assert first.profiles_hour == START + 1440
        hot = json.loads(json.dumps(first.to_state(profiles=False)))
        assert "seasonal" not in hot["series"][""]
        profiles = json.loads(json.dumps(first.profiles_state()))
        restored = AnomalyMonitor.from_state(hot, config, profiles)
    else:
        restored = AnomalyMonitor.from_state(json.loads(json.dumps(first.to_state())), config)
    alerts += feed(restored, range(1507, 1900), make_b)
    assert len(straight) >= 2
    assert [a.model_dump() for a in alerts] == [a.model_dump() for a in straight]


def test_per_tenant_override_silences_one_tenant_only() -> None:
    off = {"enabled": False}
    config = AnomalyConfig.from_mapping({"tenants": {"quiet": {"calls": off, "spend": off}}})
    loud = feed(AnomalyMonitor("acme", config), range(300), steady(8, spikes((240,))))
    quiet = feed(AnomalyMonitor("quiet", config), range(300), steady(8, spikes((240,))))
    assert any(a.kind == "CallVolumeAnomaly" for a in loud)
    assert quiet == []


def _agents_run(spike_agent_rate: float, other_rate: float) -> list[Alert]:
    """Two agents through real events; agent a spikes at minute 90."""
    config = AnomalyConfig(warmup_minutes=30, trailing_minutes=60)
    monitor = AnomalyMonitor("acme", config)
    rng = np.random.default_rng(9)
    alerts: list[Alert] = []
    offset = 0
    for m in range(100):
        for agent, rate in (("a", spike_agent_rate if 90 <= m < 92 else 6.0), ("b", other_rate)):
            for i in range(int(rate)):
                at = minute_start(START + m) + timedelta(seconds=i * 59 / rate)
                monitor.observe(make_event(rng, "tool_call", at, agent=agent), 0.0, 0, offset)
                offset += 1
        alerts += monitor.close_until(minute_start(START + m + 1 + GRACE))
    return [a for a in alerts if a.kind == "CallVolumeAnomaly"]


def test_busy_agent_alone_alerts_at_agent_level_when_the_tenant_hides_it() -> None:
    alerts = _agents_run(spike_agent_rate=40.0, other_rate=60.0)
    assert [(a.scope.agent_id, minute_of(a.window_start) - START) for a in alerts] == [("a", 90)]
    assert "Agent a of tenant acme" in alerts[0].message


def test_tenant_alert_names_the_agent_instead_of_paging_twice() -> None:
    alerts = _agents_run(spike_agent_rate=40.0, other_rate=6.0)
    assert len(alerts) == 1
    assert alerts[0].scope.agent_id is None and alerts[0].details["agents"] == "a"


def test_config_rejects_unknown_names() -> None:
    bads: list[dict[str, object]] = [
        {"metrics": {"nope": {}}},
        {"metrics": {"spend": {"threshold": 1}}},
        {"windows": 3},
    ]
    for bad in bads:
        try:
            AnomalyConfig.from_mapping(bad)
        except ValueError as exc:
            assert "unknown" in str(exc)
        else:
            raise AssertionError(f"{bad} accepted")
    assert (
        AnomalyConfig.from_mapping({"metrics": {"spend": {"mad_threshold": 7}}})
        .metric(Metric.SPEND)
        .mad_threshold
        == 7
    )


def test_a_week_of_silence_restarts_cold_but_keeps_the_new_minute() -> None:
    monitor = AnomalyMonitor("acme", AnomalyConfig())
    feed(monitor, range(10), steady(10))
    back = START + 8 * 24 * 60
    monitor.close_until(minute_start(back))  # the partition's clock reaches `back` first
    assert monitor.ingest_minute(back, steady(11)(0))
    assert monitor.close_until(minute_start(back + 1 + GRACE)) == []
    tracker = monitor.series[""]
    assert tracker.first_minute == back and tracker.closed_until == back
    assert tracker.ring.filled == 1  # the old trailing history is gone: cold start again


def _counting_closes(monitor: AnomalyMonitor) -> list[int]:
    """Record every minute the monitor closes (the unit of its catch-up work)."""
    closed: list[int] = []
    original = monitor._close_minute

    def close(minute: int, now: datetime) -> list[Alert]:
        closed.append(minute)
        return original(minute, now)

    monitor._close_minute = close  # type: ignore[method-assign]
    return closed


@pytest.mark.parametrize("gap", [timedelta(days=25), timedelta(days=365 * 20)])
def test_catching_up_is_bounded_by_the_data_not_by_the_gap(gap: timedelta) -> None:
    """A clock that jumps a month (or an event dated in year 1 followed by one of today)
    must not close every minute in between: that stalled the jobs for minutes (a month of
    minutes took 57 s in one tick)."""
    config = AnomalyConfig()
    monitor = AnomalyMonitor("acme", config)
    old = T0 - gap
    monitor.observe(make_event(RNG, "llm_call", old), 0.0, 0, 1)
    closes = _counting_closes(monitor)
    monitor.close_until(T0)
    monitor.observe(make_event(RNG, "llm_call", T0), 0.0, 0, 2)
    monitor.close_until(T0 + timedelta(minutes=5 + GRACE))
    assert len(closes) <= config.max_catch_up_minutes + 10
    assert closes[0] == minute_of(old)  # the old minute itself was closed, not dropped
    assert monitor.series[""].closed_until == minute_of(T0) + 4


def test_a_silence_within_the_catch_up_bound_is_still_closed_minute_by_minute() -> None:
    """A drop to zero must be seen: silences shorter than the bound are walked."""
    monitor = AnomalyMonitor("acme", AnomalyConfig())
    feed(monitor, range(10), steady(12))
    closes = _counting_closes(monitor)
    monitor.close_until(minute_start(START + 10 + 90 + 1 + GRACE))
    assert closes == list(range(START + 10, START + 101))


def test_an_event_far_ahead_of_the_series_clock_is_dropped_and_counted() -> None:
    monitor = AnomalyMonitor("acme", AnomalyConfig())
    feed(monitor, range(10), steady(13))
    monitor.observe(make_event(RNG, "llm_call", minute_start(START + 10_000)), 0.0, 0, 99)
    assert monitor.dropped_events == 1
    assert all(m < START + 1_000 for m in monitor.series[""].open)
