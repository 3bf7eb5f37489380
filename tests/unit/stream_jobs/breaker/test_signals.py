"""Signals: sliding sums, error rate with min calls, cost velocity, token flood, loops; config."""

from __future__ import annotations

import json

import pytest

from stream_jobs.breaker.config import BreakerConfig, BreakerThresholds
from stream_jobs.breaker.signals import (
    MAX_KEYS_PER_RUN,
    RunLoops,
    SlidingSums,
    cost_velocity_trip,
    error_rate_trip,
    loop_trip,
    token_flood_trip,
)


def test_sliding_sums_forget_buckets_that_leave_the_window() -> None:
    ring = SlidingSums(60, 6, 2)  # 10-second buckets
    ring.add(1000.0, 1, 1)
    ring.add(1030.0, 1, 0)
    assert ring.totals == [2, 1]
    ring.add(1059.9, 1, 0)
    assert ring.totals == [3, 1]
    ring.add(1060.0, 1, 0)  # bucket 106: bucket 100 (t=1000) falls out
    assert ring.totals == [3, 0]
    ring.add(2000.0, 5, 5)  # far ahead: everything else is gone
    assert ring.totals == [5, 5]


def test_sliding_sums_reject_too_old_and_accept_slightly_late() -> None:
    ring = SlidingSums(60, 6, 1)
    ring.add(1000.0, 1)
    assert ring.add(955.0, 1) is True  # bucket 95, within the 6 buckets ending at 100
    assert ring.add(940.0, 1) is False  # bucket 94: already outside the window
    assert ring.totals == [2]


def test_sliding_sums_state_round_trip_and_geometry_change() -> None:
    ring = SlidingSums(60, 6, 2)
    for t in range(1000, 1050, 7):
        ring.add(float(t), 1, t % 2)
    doc = json.loads(json.dumps(ring.to_state()))
    again = SlidingSums.from_state(doc, 60, 6, 2)
    assert again.totals == ring.totals and again.head == ring.head
    assert SlidingSums.from_state(doc, 60, 12, 2).totals == [0, 0]  # geometry changed: empty
    again.add(1100.0, 1, 1)
    ring.add(1100.0, 1, 1)
    assert again.totals == ring.totals


def test_error_rate_needs_min_calls() -> None:
    cfg = BreakerThresholds(error_rate=0.5, min_calls=20)
    assert error_rate_trip(19, 19, cfg) is None
    trip = error_rate_trip(20, 10, cfg)
    assert trip is not None and (trip.signal, trip.observed, trip.threshold) == (
        "error_rate",
        0.5,
        0.5,
    )
    assert error_rate_trip(20, 9, cfg) is None
    assert error_rate_trip(100, 100, BreakerThresholds(error_rate=None)) is None


def test_cost_velocity_is_usd_per_minute_over_the_window() -> None:
    cfg = BreakerThresholds(window_s=120, cost_per_min_usd=5.0)
    assert cost_velocity_trip(9_999_999_999, cfg) is None  # $9.99 in 2 min = $4.99/min
    trip = cost_velocity_trip(10_000_000_000, cfg)
    assert trip is not None and (trip.signal, trip.observed) == ("cost_velocity", 5.0)


def test_token_flood_single_call_and_rate() -> None:
    cfg = BreakerThresholds(window_s=60, max_call_tokens=1000, tokens_per_min=5000)
    assert token_flood_trip(1000, 1000, cfg) is None  # a ceiling reached is allowed
    one = token_flood_trip(1001, 1001, cfg)
    assert one is not None and (one.signal, one.observed, one.measure) == (
        "token_flood",
        1001,
        "tokens in one call",
    )
    rate = token_flood_trip(900, 5000, cfg)
    assert rate is not None and rate.measure == "tokens/min"
    assert (
        token_flood_trip(10**6, 10**6, BreakerThresholds(max_call_tokens=None, tokens_per_min=None))
        is None
    )


def test_run_loops_count_per_run_and_forget() -> None:
    cfg = BreakerThresholds(max_runs=2)
    loops = RunLoops()
    assert [loops.count("r1", "search", "h1", 1.0, cfg) for _ in range(3)] == [1, 2, 3]
    assert loops.count("r1", "search", "h2", 2.0, cfg) == 1  # other args
    assert loops.count("r2", "search", "h1", 3.0, cfg) == 1  # other run
    loops.count("r1", "search", "h1", 4.0, cfg)  # r1 most recently used
    loops.count("r3", "search", "h1", 5.0, cfg)  # evicts r2, the least recently used
    assert set(loops.runs) == {"r1", "r3"}
    loops.end("r1")
    assert loops.count("r1", "search", "h1", 6.0, cfg) == 1
    assert loops.expire(now_s=100.0, idle_s=95.0) == 1  # r3 idle since 5.0
    assert set(loops.runs) == {"r1"}


def test_run_loops_cap_distinct_keys_per_run() -> None:
    cfg = BreakerThresholds()
    loops = RunLoops()
    for i in range(MAX_KEYS_PER_RUN):
        loops.count("r", "t", f"h{i}", 1.0, cfg)
    assert loops.count("r", "t", "new", 1.0, cfg) == 0
    assert loops.count("r", "t", "h0", 1.0, cfg) == 2  # known keys still count


def test_loop_trip() -> None:
    assert loop_trip(4, BreakerThresholds(loop_repeats=5)) is None
    trip = loop_trip(5, BreakerThresholds(loop_repeats=5))
    assert trip is not None and (trip.signal, trip.observed, trip.threshold) == ("loop", 5, 5)
    assert loop_trip(100, BreakerThresholds(loop_repeats=None)) is None


def test_config_overrides_per_tenant_from_yaml_dict() -> None:
    cfg = BreakerConfig.from_dict(
        {
            "defaults": {"error_rate": 0.4, "cost_per_min_usd": 10},
            "tenants": {"acme": {"cost_per_min_usd": 50, "loop_repeats": None}},
        }
    )
    acme, other = cfg.for_tenant("acme"), cfg.for_tenant("beta")
    assert (acme.cost_per_min_usd, acme.error_rate, acme.loop_repeats) == (50, 0.4, None)
    assert (other.cost_per_min_usd, other.loop_repeats) == (10, BreakerThresholds().loop_repeats)
    assert BreakerConfig.from_dict(None).for_tenant("x") == BreakerThresholds()


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ({"tenants": {"acme": {"error_rate": 2}}}, "tenants.acme"),
        ({"tenants": {"acme": {"eror_rate": 0.1}}}, "eror_rate"),
        ({"defaults": {"cooldown_s": 100, "max_cooldown_s": 10}}, "max_cooldown_s"),
        ({"tenants": {"Not A Slug": {}}}, "tenants"),
    ],
)
def test_config_errors_name_the_field(doc: dict[str, object], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        BreakerConfig.from_dict(doc)


def test_cooldown_backoff() -> None:
    cfg = BreakerThresholds(cooldown_s=30, cooldown_backoff=2, max_cooldown_s=100)
    assert [cfg.cooldown(n) for n in range(4)] == [30, 60, 100, 100]
