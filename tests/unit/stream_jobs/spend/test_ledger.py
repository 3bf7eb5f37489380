"""Spend ledger: rollups per dimension and window, replays, state round trips, late events."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from datetime import timedelta
from decimal import Decimal

from agentaudit_schemas.budgets import WindowKind
from stream_jobs.spend.ledger import SpendTracker
from stream_jobs.spend.types import SpendWindow, nano_to_usd, usd_to_nano
from stream_jobs.spend.windows import Calendar, window_at
from tests.unit.stream_jobs.spend.factory import llm, tool, utc

NOW = utc(2026, 11, 21, 12)
C = Decimal("0.000437500")


def rows_by_key(rows: list[SpendWindow]) -> dict[tuple[str, str, str, str], SpendWindow]:
    """Latest snapshot per (dimension, key, kind, label), as a ReplacingMergeTree keeps it."""
    out: dict[tuple[str, str, str, str], SpendWindow] = {}
    for r in rows:
        k = (r.dimension, r.key, r.window_kind, r.window)
        if k not in out or r.as_of_offset >= out[k].as_of_offset:
            out[k] = r
    return out


def test_usd_nano_conversions_are_exact() -> None:
    assert usd_to_nano(Decimal("0.000437500")) == 437_500
    assert usd_to_nano(0.05) == 50_000_000
    assert nano_to_usd(437_500) == Decimal("0.000437500")


def test_spend_per_dimension_and_window() -> None:
    tr = SpendTracker()
    tr.observe(llm(utc(2026, 11, 21, 10, 5), user="u1", model="gpt-5-mini"), C, 0, 1, NOW)
    tr.observe(llm(utc(2026, 11, 21, 10, 6), user="u2", model="gpt-5"), C * 2, 0, 2, NOW)
    tr.observe(
        llm(utc(2026, 11, 21, 11, 0), user="u1", agent="other", input_tokens=10, output_tokens=5),
        C,
        0,
        3,
        NOW,
    )
    tr.observe(tool(utc(2026, 11, 21, 11, 1)), Decimal(0), 0, 4, NOW)  # no spend: not a call
    rows = rows_by_key(tr.drain_rollups())
    assert rows[("tenant", "acme", "day", "day:2026-11-21")].cost_usd == C * 4
    assert rows[("tenant", "acme", "day", "day:2026-11-21")].calls == 3
    assert rows[("tenant", "acme", "day", "day:2026-11-21")].tokens == 1200 + 1200 + 15
    assert rows[("tenant", "acme", "hour", "hour:2026-11-21T10")].cost_usd == C * 3
    assert rows[("tenant", "acme", "hour", "hour:2026-11-21T11")].cost_usd == C
    assert rows[("user", "u1", "month", "month:2026-11")].cost_usd == C * 2
    assert rows[("user", "u2", "month", "month:2026-11")].cost_usd == C * 2
    assert rows[("agent", "support-bot", "day", "day:2026-11-21")].calls == 2
    assert rows[("agent", "other", "day", "day:2026-11-21")].calls == 1
    assert rows[("model", "gpt-5", "hour", "hour:2026-11-21T10")].cost_usd == C * 2
    r = rows[("tenant", "acme", "hour", "hour:2026-11-21T10")]
    assert (r.tenant_id, r.timezone, r.window_start, r.window_end) == (
        "acme",
        "UTC",
        utc(2026, 11, 21, 10),
        utc(2026, 11, 21, 11),
    )
    assert r.as_row()[SpendWindow.COLUMNS.index("cost_usd")] == C * 3
    assert r.as_of_partition == 0 and r.as_of_offset == 4


def test_last_microsecond_of_an_hour_and_the_next_hour_land_in_two_windows() -> None:
    tr = SpendTracker()
    tr.observe(llm(utc(2026, 11, 21, 10, 59, 59, 999999)), C, 0, 1, NOW)
    tr.observe(llm(utc(2026, 11, 21, 11)), C * 3, 0, 2, NOW)
    rows = rows_by_key(tr.drain_rollups())
    assert rows[("tenant", "acme", "hour", "hour:2026-11-21T10")].cost_usd == C
    assert rows[("tenant", "acme", "hour", "hour:2026-11-21T11")].cost_usd == C * 3
    assert rows[("tenant", "acme", "day", "day:2026-11-21")].cost_usd == C * 4


def test_replayed_offsets_are_not_counted_twice() -> None:
    tr = SpendTracker()
    events = [llm(utc(2026, 11, 21, 10, i)) for i in range(5)]
    for off, ev in enumerate(events):
        tr.observe(ev, C, 3, off, NOW)
    for off, ev in enumerate(events):  # at-least-once redelivery
        tr.observe(ev, C, 3, off, NOW)
    rows = rows_by_key(tr.drain_rollups())
    assert rows[("tenant", "acme", "day", "day:2026-11-21")].cost_usd == C * 5
    assert tr.replayed == 5


def test_state_round_trip_then_replay_matches_an_uninterrupted_run() -> None:
    events = [
        llm(utc(2026, 11, 21, 9 + i // 4, (i * 13) % 60), user=f"u{i % 3}") for i in range(16)
    ]
    straight = SpendTracker()
    for off, ev in enumerate(events):
        straight.observe(ev, C, 1, 100 + off, NOW)
    first = SpendTracker()
    for off, ev in enumerate(events[:9]):
        first.observe(ev, C, 1, 100 + off, NOW)
    saved = json.loads(json.dumps(first.to_state("acme")))  # as the table changelog stores it
    restored = SpendTracker()
    restored.from_state("acme", saved)
    for off, ev in enumerate(events):  # the consumer restarts from an older committed offset
        restored.observe(ev, C, 1, 100 + off, NOW)
    assert restored.replayed == 9
    assert rows_by_key(restored.drain_rollups()) == rows_by_key(straight.drain_rollups())


def test_a_new_partition_for_a_tenant_is_not_mistaken_for_a_replay() -> None:
    tr = SpendTracker()
    tr.observe(llm(utc(2026, 11, 21, 10)), C, 0, 50, NOW)
    tr.observe(llm(utc(2026, 11, 21, 10, 1)), C, 1, 7, NOW)  # topic repartitioned
    assert rows_by_key(tr.drain_rollups())[("tenant", "acme", "day", "day:2026-11-21")].calls == 2


def test_a_late_event_past_the_grace_is_dropped_whether_or_not_its_window_was_expired() -> None:
    """Expiry runs at state writes, not per event: whether a late event past the grace
    counted depended on when the worker last wrote state, so a replay after a crash could
    count it differently from the first run."""
    tr = SpendTracker(grace=timedelta(minutes=30))
    now = utc(2026, 11, 21, 13)
    tr.observe(llm(utc(2026, 11, 21, 10, 50)), C, 0, 1, now)
    tr.observe(llm(utc(2026, 11, 21, 12)), C, 0, 2, now)  # watermark 12:00 > 11:00 + 30 min
    tr.observe(llm(utc(2026, 11, 21, 10, 57)), C, 0, 3, now)  # hour 10 not expired yet
    assert tr.late_dropped == 1
    rows = rows_by_key(tr.drain_rollups())
    assert rows[("tenant", "acme", "hour", "hour:2026-11-21T10")].cost_usd == C  # not 2 C
    assert rows[("tenant", "acme", "day", "day:2026-11-21")].cost_usd == C * 3


def test_late_event_counts_within_grace_and_is_dropped_after() -> None:
    tr = SpendTracker(grace=timedelta(minutes=30))
    now = utc(2026, 11, 21, 13)
    tr.observe(llm(utc(2026, 11, 21, 10, 50)), C, 0, 1, now)
    tr.observe(llm(utc(2026, 11, 21, 11, 10)), C, 0, 2, now)
    tr.observe(llm(utc(2026, 11, 21, 10, 55)), C, 0, 3, now)  # late, hour 10 still retained
    rows = rows_by_key(tr.drain_rollups())
    assert rows[("tenant", "acme", "hour", "hour:2026-11-21T10")].cost_usd == C * 2
    tr.observe(llm(utc(2026, 11, 21, 12)), C, 0, 4, now)  # watermark 12:00 > 11:00 + 30 min
    tr.drain_rollups()  # expires hour 10
    tr.observe(llm(utc(2026, 11, 21, 10, 57)), C, 0, 5, now)
    assert tr.late_dropped == 1
    rows = rows_by_key(tr.drain_rollups())
    assert ("tenant", "acme", "hour", "hour:2026-11-21T10") not in rows  # not re-emitted smaller
    # the windows still retained count it: the day and the month
    assert rows[("tenant", "acme", "day", "day:2026-11-21")].cost_usd == C * 5
    assert rows[("tenant", "acme", "month", "month:2026-11")].cost_usd == C * 5


def test_event_from_a_clock_far_ahead_does_not_close_current_windows() -> None:
    tr = SpendTracker(grace=timedelta(minutes=1))
    now = utc(2026, 11, 21, 10, 30)
    tr.observe(llm(utc(2026, 11, 21, 10, 29)), C, 0, 1, now)
    tr.observe(llm(utc(2026, 11, 23, 10)), C, 0, 2, now)  # two days ahead
    tr.drain_rollups()
    tr.observe(llm(utc(2026, 11, 21, 10, 30)), C, 0, 3, now)
    rows = rows_by_key(tr.drain_rollups())
    assert tr.late_dropped == 0
    assert rows[("tenant", "acme", "hour", "hour:2026-11-21T10")].cost_usd == C * 2


def test_drain_emits_only_changed_cells() -> None:
    tr = SpendTracker()
    tr.observe(llm(utc(2026, 11, 21, 10), user="u1"), C, 0, 1, NOW)
    assert len(tr.drain_rollups()) == 3 * 4  # 3 calendars x tenant, user, agent, model
    tr.observe(llm(utc(2026, 11, 21, 10, 1), user=None), C, 0, 2, NOW)
    again = tr.drain_rollups()
    assert {r.dimension for r in again} == {"tenant", "agent", "model"}
    assert tr.drain_rollups() == []


def test_budget_calendar_reports_tenant_and_user_totals() -> None:
    tr = SpendTracker()
    tr.add_budget_calendar(Calendar(WindowKind.DAY, "Europe/Berlin"))
    now = utc(2026, 11, 22, 1)
    tr.observe(llm(utc(2026, 11, 21, 22, 30), user="u9"), C, 0, 1, now)  # 23:30 Berlin
    ups = tr.observe(llm(utc(2026, 11, 21, 23, 30), user="u9"), C, 0, 2, now)  # 00:30 next day
    assert {(u.dimension, u.key, u.window.label, u.cost_nano) for u in ups} == {
        ("tenant", "acme", "day:2026-11-22", 437_500),
        ("user", "u9", "day:2026-11-22", 437_500),
    }
    assert (
        tr.observe(llm(utc(2026, 11, 21, 23, 31), user="u9"), C, 0, 3, now)[0].cost_nano == 875_000
    )


def test_reference_model_random_stream_with_restarts() -> None:
    """Totals equal a naive recount, whatever the order, lateness, replays and restarts."""
    rng = random.Random(3)
    cals = [Calendar(k) for k in WindowKind] + [Calendar(WindowKind.DAY, "America/New_York")]
    start = utc(2026, 11, 30, 20)
    events = []
    t = start
    for _ in range(400):
        t += timedelta(seconds=rng.randrange(0, 900))
        jitter = timedelta(seconds=-rng.randrange(0, 600)) if rng.random() < 0.1 else timedelta(0)
        ev = llm(
            t + jitter,
            tenant=rng.choice(["acme", "beta"]),
            user=rng.choice(["u1", "u2", None]),
            model=rng.choice(["gpt-5", "gpt-5-mini"]),
        )
        events.append((ev, Decimal(rng.randrange(1, 10**6)).scaleb(-9)))
    expected: dict[tuple[str, str, str, str], int] = defaultdict(int)
    for ev, cost in events:
        model = ev.payload.request_model  # type: ignore[attr-defined]
        keys = [("tenant", ev.tenant_id), ("agent", ev.agent_id), ("model", model)]
        if ev.user_id:
            keys.append(("user", ev.user_id))
        for cal in cals:
            label = window_at(ev.occurred_at, cal).label
            for dim, key in keys:
                expected[(ev.tenant_id, f"{dim}:{key}", cal.tz, label)] += usd_to_nano(cost)
    tr = SpendTracker(tuple(cals), grace=timedelta(days=2))
    got: dict[tuple[str, str, str, str], int] = {}
    offsets = {"acme": 0, "beta": 0}
    numbered = []
    for ev, cost in events:
        offsets[ev.tenant_id] += 1
        numbered.append((ev, cost, 0 if ev.tenant_id == "acme" else 1, offsets[ev.tenant_id]))
    i = 0
    while i < len(numbered):
        ev, cost, p, off = numbered[i]
        tr.observe(ev, cost, p, off, ev.occurred_at + timedelta(minutes=1))
        i += 1
        if rng.random() < 0.03:  # crash: restore from saved state, redeliver from an older offset
            for r in tr.drain_rollups():
                got[(r.tenant_id, f"{r.dimension}:{r.key}", r.timezone, r.window)] = usd_to_nano(
                    r.cost_usd
                )
            states = {k: json.loads(json.dumps(tr.to_state(k))) for k in tr.tenants()}
            tr = SpendTracker(tuple(cals), grace=timedelta(days=2))
            for k, doc in states.items():
                tr.from_state(k, doc)
            i = max(0, i - rng.randrange(1, 20))
    for r in tr.drain_rollups():
        got[(r.tenant_id, f"{r.dimension}:{r.key}", r.timezone, r.window)] = usd_to_nano(r.cost_usd)
    assert tr.late_dropped == 0
    assert got == dict(expected)


def test_to_state_is_plain_json() -> None:
    tr = SpendTracker()
    tr.observe(llm(utc(2026, 11, 21, 10)), C, 0, 1, NOW)
    doc = tr.to_state("acme")
    assert json.loads(json.dumps(doc)) == doc
    assert tr.to_state("nobody") is None
    assert tr.pop_dirty() == {"acme"} and tr.pop_dirty() == set()


def test_state_written_with_updates_pending_is_complete() -> None:
    tr = SpendTracker()
    tr.observe(llm(utc(2026, 11, 21, 10)), C, 0, 1, NOW)
    tr.observe(llm(utc(2026, 11, 21, 10, 1)), C, 0, 2, NOW)
    other = SpendTracker()
    other.from_state("acme", tr.to_state("acme") or {})
    rows = rows_by_key(other.drain_rollups())
    assert rows[("tenant", "acme", "hour", "hour:2026-11-21T10")].cost_usd == C * 2


def test_usd_to_nano_rounds_half_even_below_a_nano_dollar() -> None:
    assert usd_to_nano(Decimal("0.0000000015")) == 2
    assert usd_to_nano(Decimal("0.0000000025")) == 2
    assert usd_to_nano(Decimal("-0.0000000015")) == -2
    assert usd_to_nano(Decimal("12.5")) == 12_500_000_000
