"""The breaker state machine alone: every transition, cooldown backoff, state round trip."""

from __future__ import annotations

import json

from agentaudit_schemas.records import BreakerState
from stream_jobs.breaker.config import BreakerThresholds
from stream_jobs.breaker.signals import Trip
from stream_jobs.breaker.state import Breaker

CFG = BreakerThresholds(cooldown_s=10, cooldown_backoff=3, max_cooldown_s=50, probe_successes=2)
TRIP = Trip("error_rate", 0.9, 0.5)
CLOSED, OPEN, HALF = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


def opened(now: float = 100.0) -> Breaker:
    b = Breaker()
    assert b.trip(TRIP, now, CFG) is not None
    return b


def test_closed_to_open_on_a_trip() -> None:
    b = Breaker()
    tr = b.trip(TRIP, 100.0, CFG)
    assert tr is not None
    assert (tr.from_state, tr.to_state, tr.signal, tr.observed, tr.threshold) == (
        CLOSED,
        OPEN,
        "error_rate",
        0.9,
        0.5,
    )
    assert b.state is OPEN and b.cooldown_s == 10


def test_open_ignores_further_trips_and_probes() -> None:
    b = opened()
    assert b.trip(TRIP, 101.0, CFG) is None
    assert b.probe_ok(CFG) is None and b.probe_failed(101.0, CFG) is None
    assert b.state is OPEN


def test_cooldown_moves_open_to_half_open_only_when_elapsed() -> None:
    b = opened(100.0)
    assert b.cooldown_elapsed(109.999) is None
    tr = b.cooldown_elapsed(110.0)
    assert tr is not None and (tr.from_state, tr.to_state, tr.signal) == (OPEN, HALF, "cooldown")
    assert b.cooldown_elapsed(200.0) is None  # already half-open


def test_half_open_closes_after_enough_successful_probes() -> None:
    b = opened(100.0)
    b.cooldown_elapsed(110.0)
    assert b.probe_ok(CFG) is None
    tr = b.probe_ok(CFG)
    assert tr is not None and (tr.from_state, tr.to_state, tr.signal, tr.observed) == (
        HALF,
        CLOSED,
        "probe_ok",
        2,
    )
    assert b.state is CLOSED
    assert b.probe_ok(CFG) is None  # closed: probes mean nothing


def test_failed_probe_reopens_with_backoff_capped() -> None:
    b = opened(100.0)
    cooldowns = []
    now = 100.0
    for _ in range(4):
        now += b.cooldown_s
        assert b.cooldown_elapsed(now) is not None
        tr = b.probe_failed(now, CFG)
        assert tr is not None and (tr.from_state, tr.to_state, tr.signal) == (
            HALF,
            OPEN,
            "probe_failed",
        )
        cooldowns.append(b.cooldown_s)
    assert cooldowns == [30, 50, 50, 50]  # 10 x 3, x 9 capped at 50


def test_signal_in_half_open_reopens_and_closing_resets_backoff() -> None:
    b = opened(0.0)
    b.cooldown_elapsed(10.0)
    tr = b.trip(Trip("loop", 9, 8), 10.0, CFG)
    assert tr is not None and (tr.from_state, tr.to_state, tr.signal) == (HALF, OPEN, "loop")
    assert b.cooldown_s == 30
    b.cooldown_elapsed(40.0)
    b.probe_ok(CFG)
    b.probe_ok(CFG)
    assert b.state is CLOSED
    b.trip(TRIP, 50.0, CFG)
    assert b.cooldown_s == 10  # back to the base cooldown


def test_probe_counter_restarts_each_half_open() -> None:
    b = opened(0.0)
    b.cooldown_elapsed(10.0)
    b.probe_ok(CFG)
    b.probe_failed(11.0, CFG)
    b.cooldown_elapsed(41.0)
    assert b.probe_ok(CFG) is None  # one success in this half-open period is not enough


def test_state_round_trip() -> None:
    b = opened(100.0)
    b.cause = "ab" * 16
    again = Breaker.from_state(json.loads(json.dumps(b.to_state())))
    assert again.to_state() == b.to_state()
    assert again.cooldown_elapsed(110.0) is not None
