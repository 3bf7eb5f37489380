"""BreakerBoard end to end on events: each signal trips, the full cycle, replays, restarts."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from agentaudit_schemas.envelope import Envelope
from agentaudit_schemas.records import (
    Alert,
    BreakerState,
    BreakerTransition,
    ControlAction,
    ControlMessage,
    ControlReason,
)
from stream_jobs.breaker.board import BreakerBoard, Record
from stream_jobs.breaker.config import BreakerConfig
from tests.unit.stream_jobs.breaker.factory import config, llm, run_finished, tool, utc

T0 = utc(2026, 11, 21, 10)
NOW = utc(2026, 11, 21, 10, 5)
ZERO = Decimal(0)


class Feed:
    """Offsets in order on partition 0, like one tenant's partition."""

    def __init__(self, board: BreakerBoard) -> None:
        self.board = board
        self.offset = 0

    def __call__(self, event: Envelope, cost: Decimal = ZERO, now: datetime = NOW) -> list[Record]:
        self.offset += 1
        return self.board.observe(event, cost, 0, self.offset, now)


def transitions(records: list[Record]) -> list[tuple[str, str, str, str]]:
    return [
        (r.scope.key, r.from_state.value, r.to_state.value, r.signal)
        for r in records
        if isinstance(r, BreakerTransition)
    ]


def controls(records: list[Record]) -> list[tuple[ControlAction, ControlReason]]:
    return [(r.action, r.reason) for r in records if isinstance(r, ControlMessage)]


def test_error_rate_trips_only_after_min_calls() -> None:
    feed = Feed(BreakerBoard(config(min_calls=10, error_rate=0.5)))
    out: list[Record] = []
    for i in range(9):
        out += feed(llm(T0 + timedelta(seconds=i), status="error"))
    assert out == []  # 9 calls, all failed: not enough calls to judge
    out = feed(llm(T0 + timedelta(seconds=9), status="error"))
    assert transitions(out) == [("tenant=acme/agent=bot", "closed", "open", "error_rate")]
    assert controls(out) == [(ControlAction.BLOCK, ControlReason.BREAKER_OPEN)]
    [alert] = [r for r in out if isinstance(r, Alert)]
    assert (alert.kind, alert.runbook, alert.observed, alert.limit) == (
        "BreakerOpen",
        "runbooks/BreakerOpen.md",
        1.0,
        0.5,
    )
    [block] = [r for r in out if isinstance(r, ControlMessage)]
    assert block.runbook == "runbooks/BreakerOpen.md" and block.until is None


def test_errors_spread_beyond_the_window_do_not_trip() -> None:
    feed = Feed(BreakerBoard(config(min_calls=4, error_rate=0.5, window_s=60)))
    out: list[Record] = []
    for i in range(10):  # one failed and one good call every 40 s: 50% but never 4 calls a window
        at = T0 + timedelta(seconds=40 * i)  # the clock follows the events (past NOW)
        out += feed(llm(at, status="error"), now=at)
        out += feed(llm(at + timedelta(seconds=1)), now=at + timedelta(seconds=1))
    assert out == []


def test_tool_errors_trip_the_tool_scope_and_count_for_the_agent() -> None:
    board = BreakerBoard(config(min_calls=5, error_rate=0.6))
    feed = Feed(board)
    out: list[Record] = []
    for i in range(5):
        out += feed(tool(T0 + timedelta(seconds=i), name="crm", args=f"a{i}", status="error"))
    assert sorted(transitions(out)) == [
        ("tenant=acme/agent=bot", "closed", "open", "error_rate"),
        ("tenant=acme/agent=bot/tool=crm", "closed", "open", "error_rate"),
    ]
    assert board.state_of("acme", "bot", "crm") is BreakerState.OPEN
    assert board.state_of("acme", "bot", "other") is BreakerState.CLOSED


def test_loop_detection_trips_the_repeated_tool_within_one_run() -> None:
    board = BreakerBoard(config(loop_repeats=4))
    feed = Feed(board)
    out: list[Record] = []
    for i in range(3):
        out += feed(tool(T0 + timedelta(seconds=i), args="same", run="r1"))
        out += feed(tool(T0 + timedelta(seconds=i), args="same", run="r2"))  # another run
        out += feed(tool(T0 + timedelta(seconds=i), args=f"other{i}", run="r1"))
    assert out == []
    out = feed(tool(T0 + timedelta(seconds=5), args="same", run="r1"))
    assert transitions(out) == [("tenant=acme/agent=bot/tool=search", "closed", "open", "loop")]
    [alert] = [r for r in out if isinstance(r, Alert)]
    assert alert.details["run_id"] == "r1" and alert.observed == 4
    assert board.state_of("acme", "bot") is BreakerState.CLOSED  # the agent's other work goes on


def test_run_finished_forgets_the_run() -> None:
    feed = Feed(BreakerBoard(config(loop_repeats=3)))
    out: list[Record] = []
    for i in range(2):
        out += feed(tool(T0 + timedelta(seconds=i), args="same", run="r1"))
    out += feed(run_finished(T0 + timedelta(seconds=3), run="r1"))
    for i in range(2):
        out += feed(tool(T0 + timedelta(seconds=4 + i), args="same", run="r1"))
    assert out == []


def test_cost_velocity_trips_on_spend_per_minute() -> None:
    feed = Feed(BreakerBoard(config(cost_per_min_usd=1.0, window_s=60)))
    out: list[Record] = []
    for i in range(9):
        out += feed(llm(T0 + timedelta(seconds=5 * i)), Decimal("0.1"))
    assert out == []  # $0.90 in the last minute
    out = feed(llm(T0 + timedelta(seconds=46)), Decimal("0.1"))
    assert transitions(out) == [("tenant=acme/agent=bot", "closed", "open", "cost_velocity")]


def test_cost_velocity_does_not_trip_when_spend_is_slow() -> None:
    feed = Feed(BreakerBoard(config(cost_per_min_usd=1.0, window_s=60)))
    out: list[Record] = []
    for i in range(30):  # $0.40 every 40 s: at most $0.80 in any minute
        at = T0 + timedelta(seconds=40 * i)  # the clock follows the events (past NOW)
        out += feed(llm(at), Decimal("0.4"), now=at)
    assert out == []


def test_token_flood_single_call_and_per_minute() -> None:
    feed = Feed(BreakerBoard(config(max_call_tokens=10_000, tokens_per_min=30_000)))
    out = feed(llm(T0, tokens=10_001))
    assert transitions(out) == [("tenant=acme/agent=bot", "closed", "open", "token_flood")]
    feed2 = Feed(BreakerBoard(config(max_call_tokens=10_000, tokens_per_min=30_000)))
    out = []
    for i in range(4):
        out += feed2(llm(T0 + timedelta(seconds=i), tokens=9_000))
    assert transitions(out) == [("tenant=acme/agent=bot", "closed", "open", "token_flood")]


def test_per_tenant_override_and_disabled_signal() -> None:
    cfg = BreakerConfig.from_dict(
        {
            "defaults": {"max_call_tokens": 5000},
            "tenants": {"big": {"max_call_tokens": 50_000}, "free": {"max_call_tokens": None}},
        }
    )
    feed = Feed(BreakerBoard(cfg))
    assert transitions(feed(llm(T0, tenant="acme", tokens=6000)))
    assert feed(llm(T0, tenant="big", tokens=6000)) == []
    assert feed(llm(T0, tenant="free", tokens=90_000)) == []


def test_full_cycle_open_half_open_closed() -> None:
    board = BreakerBoard(config(max_call_tokens=1000, cooldown_s=30, probe_successes=2))
    feed = Feed(board)
    opened_at = NOW
    assert transitions(feed(llm(T0, tokens=5000), now=opened_at))
    assert feed(llm(T0 + timedelta(seconds=1), tokens=100), now=opened_at) == []  # open: ignored
    assert board.tick(opened_at + timedelta(seconds=29)) == []
    half = board.tick(opened_at + timedelta(seconds=30))
    assert transitions(half) == [("tenant=acme/agent=bot", "open", "half_open", "cooldown")]
    assert controls(half) == [(ControlAction.UNBLOCK, ControlReason.BREAKER_HALF_OPEN)]
    later = opened_at + timedelta(seconds=31)
    assert feed(llm(T0 + timedelta(seconds=40), tokens=100), now=later) == []  # 1st probe ok
    closed = feed(llm(T0 + timedelta(seconds=41), tokens=100), now=later)
    assert transitions(closed) == [("tenant=acme/agent=bot", "half_open", "closed", "probe_ok")]
    assert controls(closed) == [(ControlAction.UNBLOCK, ControlReason.BREAKER_CLOSED)]
    assert board.state_of("acme", "bot") is BreakerState.CLOSED


def test_probes_are_judged_on_a_fresh_window() -> None:
    cfg = config(tokens_per_min=30_000, window_s=60, cooldown_s=10, probe_successes=1)
    board = BreakerBoard(cfg)
    feed = Feed(board)
    out: list[Record] = []
    for i in range(4):  # 36,000 tokens within a minute of event time
        out += feed(llm(T0 + timedelta(seconds=i), tokens=9_000), now=NOW)
    assert transitions(out)
    board.tick(NOW + timedelta(seconds=10))
    # still inside the same minute of event time: the tokens before the trip must not count
    probe = feed(llm(T0 + timedelta(seconds=20), tokens=100), now=NOW + timedelta(seconds=11))
    assert transitions(probe) == [("tenant=acme/agent=bot", "half_open", "closed", "probe_ok")]


def test_failed_probe_reopens_with_a_longer_cooldown() -> None:
    board = BreakerBoard(config(max_call_tokens=1000, cooldown_s=10, cooldown_backoff=2))
    feed = Feed(board)
    feed(llm(T0, tokens=5000), now=NOW)
    board.tick(NOW + timedelta(seconds=10))
    out = feed(
        llm(T0 + timedelta(seconds=20), status="error", tokens=100), now=NOW + timedelta(seconds=11)
    )
    assert transitions(out) == [("tenant=acme/agent=bot", "half_open", "open", "probe_failed")]
    assert controls(out) == [(ControlAction.BLOCK, ControlReason.BREAKER_OPEN)]
    assert not [r for r in out if isinstance(r, Alert)]  # re-opening does not page again
    assert board.tick(NOW + timedelta(seconds=11 + 19)) == []
    assert transitions(board.tick(NOW + timedelta(seconds=11 + 20)))  # 2 x 10 s


def test_replayed_offsets_change_nothing() -> None:
    board = BreakerBoard(config(max_call_tokens=1000))
    events = [llm(T0, tokens=100), llm(T0, tokens=5000)]
    first = [r for i, e in enumerate(events) for r in board.observe(e, ZERO, 2, i, NOW)]
    assert transitions(first)
    assert [r for i, e in enumerate(events) for r in board.observe(e, ZERO, 2, i, NOW)] == []
    assert board.replayed == 2


def test_restart_from_saved_state_reemits_the_same_ids() -> None:
    def run(board: BreakerBoard, start: int = 0) -> list[Record]:
        out: list[Record] = []
        events = [llm(T0 + timedelta(seconds=i), status="error") for i in range(25)]
        for off in range(start, len(events)):
            out += board.observe(events[off], ZERO, 0, off, NOW)
        return out + board.tick(NOW + timedelta(seconds=60))

    straight = run(BreakerBoard(config(min_calls=20)))
    crashed = BreakerBoard(config(min_calls=20))
    events = [llm(T0 + timedelta(seconds=i), status="error") for i in range(10)]
    for off, e in enumerate(events):
        crashed.observe(e, ZERO, 0, off, NOW)
    saved = {k: json.loads(json.dumps(crashed.to_state(k))) for k in crashed.pop_dirty()}
    restored = BreakerBoard(config(min_calls=20))
    for k, doc in saved.items():
        restored.from_state(k, doc)
    again = run(restored)  # redelivered from offset 0; 0..9 are skipped
    assert [r.model_dump(exclude={"at", "issued_at", "fired_at"}) for r in again] == [
        r.model_dump(exclude={"at", "issued_at", "fired_at"}) for r in straight
    ]
    assert len(transitions(straight)) == 2  # opened, then half-open after the cooldown


def test_state_round_trip_while_open_keeps_the_cooldown() -> None:
    board = BreakerBoard(config(max_call_tokens=1000, cooldown_s=30))
    Feed(board)(llm(T0, tokens=5000), now=NOW)
    restored = BreakerBoard(config(max_call_tokens=1000, cooldown_s=30))
    restored.from_state("acme", json.loads(json.dumps(board.to_state("acme"))))
    assert restored.state_of("acme", "bot") is BreakerState.OPEN
    assert restored.tick(NOW + timedelta(seconds=29)) == []
    assert transitions(restored.tick(NOW + timedelta(seconds=30))) == transitions(
        board.tick(NOW + timedelta(seconds=30))
    )


def test_idle_closed_scopes_and_runs_are_forgotten() -> None:
    board = BreakerBoard(config(run_idle_s=60))
    Feed(board)(tool(T0, run="r1"), now=NOW)
    assert board.to_state("acme")["r"]  # type: ignore[index]
    board.tick(NOW + timedelta(hours=2))
    doc = board.to_state("acme")
    assert doc is not None and doc["a"] == [] and doc["t"] == [] and doc["r"] == []


def test_set_config_applies_new_thresholds() -> None:
    board = BreakerBoard(config(max_call_tokens=10_000))
    feed = Feed(board)
    assert feed(llm(T0, tokens=5000)) == []
    board.set_config(config(max_call_tokens=1000, window_s=30))
    assert transitions(feed(llm(T0 + timedelta(seconds=1), tokens=5000)))


def test_other_event_types_only_move_the_offset() -> None:
    board = BreakerBoard()
    assert board.observe(run_finished(T0), ZERO, 0, 1, NOW) == []
    assert board.pop_dirty() == {"acme"}
    assert board.observe(run_finished(T0), ZERO, 0, 1, NOW) == [] and board.replayed == 1


def test_one_event_dated_ahead_of_the_clock_does_not_blind_the_agents_breaker() -> None:
    """An agent host whose clock runs 10 min ahead (within the sink's 15 min skew, so the
    event is stored) used to move the agent's sliding minute 10 min forward: every correctly
    dated call after it was "too old" and the breaker ignored them for 10 minutes."""
    feed = Feed(BreakerBoard(config(min_calls=10, error_rate=0.5)))
    assert feed(llm(NOW + timedelta(minutes=10))) == []
    out: list[Record] = []
    for i in range(10):
        out += feed(llm(NOW - timedelta(seconds=30 - i), status="error"))
    assert transitions(out) == [("tenant=acme/agent=bot", "closed", "open", "error_rate")]


def test_a_tick_between_sweeps_visits_only_open_breakers(monkeypatch: Any) -> None:
    """Scopes are the producer's (agent and tool names): the tick looked at every scope every
    second under the jobs' lock (0.34 s at 100k tool scopes of one tenant). Between sweeps
    it looks only at breakers that opened; they still go half_open on time, restored too."""
    from stream_jobs.breaker.state import Breaker

    board = BreakerBoard(config(max_call_tokens=1000, cooldown_s=30))
    feed = Feed(board)
    for i in range(1000):
        feed(tool(T0, name=f"tool{i}"))
    board.tick(NOW)  # the first tick sweeps
    assert transitions(feed(llm(T0, tokens=5000)))  # the agent breaker opens at NOW
    visits: list[object] = []
    elapsed = Breaker.cooldown_elapsed

    def counted(self: Breaker, now: float) -> Any:
        visits.append(self)
        return elapsed(self, now)

    monkeypatch.setattr(Breaker, "cooldown_elapsed", counted)
    assert board.tick(NOW + timedelta(seconds=29)) == []
    assert len(visits) == 1  # before: 1,001 (every scope)
    restored = BreakerBoard(config(max_call_tokens=1000, cooldown_s=30))
    restored.from_state("acme", board.to_state("acme"))
    half = restored.tick(NOW + timedelta(seconds=30))
    assert transitions(half) == [("tenant=acme/agent=bot", "open", "half_open", "cooldown")]
    assert transitions(board.tick(NOW + timedelta(seconds=30))) == transitions(half)
