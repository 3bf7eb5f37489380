"""Budgets: thresholds fire once, hard limits block until the window ends, run-time changes."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from decimal import Decimal

from agentaudit_schemas.budgets import Budget
from agentaudit_schemas.records import (
    Alert,
    ControlAction,
    ControlMessage,
    ControlReason,
    Severity,
    record_id,
)
from stream_jobs.spend.budgets import BudgetEvaluator
from stream_jobs.spend.job import SpendJob
from stream_jobs.spend.types import usd_to_nano
from tests.unit.stream_jobs.spend.factory import budget, llm, utc

DAY_START = utc(2026, 11, 21)
NOW = utc(2026, 11, 21, 12)
TEN_CENTS = Decimal("0.1")


def daily(limit: float = 1.0, **extra: object) -> Budget:
    return budget(
        name="acme-daily", scope="tenant", tenant_id="acme", window="day", limit_usd=limit, **extra
    )


def feed(
    job: SpendJob,
    n: int,
    *,
    first_offset: int = 0,
    cost: Decimal = TEN_CENTS,
    user: str | None = "u1",
    now: datetime = NOW,
) -> list[Alert | ControlMessage]:
    """`n` calls of `cost` by `user` from 10:00 on 21 Nov, one a second, from `first_offset`."""
    out: list[Alert | ControlMessage] = []
    for i in range(n):
        at = utc(2026, 11, 21, 10) + timedelta(seconds=i)
        out += job.observe(llm(at, user=user), cost, 0, first_offset + i, now)
    return out


def alerts(records: list[Alert | ControlMessage]) -> list[Alert]:
    return [r for r in records if isinstance(r, Alert)]


def controls(records: list[Alert | ControlMessage]) -> list[ControlMessage]:
    return [r for r in records if isinstance(r, ControlMessage)]


def test_thresholds_fire_once_each_then_exhaustion_blocks_until_window_end() -> None:
    job = SpendJob([daily()])
    records = feed(job, 15)
    kinds = [(a.kind, a.details.get("threshold"), a.severity) for a in alerts(records)]
    assert kinds == [
        ("BudgetThresholdCrossed", 0.5, Severity.WARNING),
        ("BudgetThresholdCrossed", 0.8, Severity.WARNING),
        ("BudgetExhausted", None, Severity.CRITICAL),
    ]
    half = alerts(records)[0]
    assert (half.observed, half.limit, half.window) == (0.5, 1.0, "day:2026-11-21")
    assert (half.window_start, half.window_end) == (DAY_START, utc(2026, 11, 22))
    assert half.scope.key == "tenant=acme" and half.runbook == "runbooks/BudgetThresholdCrossed.md"
    assert "acme" in half.message and "$0.50" in half.message and "50%" in half.message
    [block] = controls(records)
    assert block.action is ControlAction.BLOCK and block.reason is ControlReason.BUDGET_EXHAUSTED
    assert block.until == utc(2026, 11, 22) and block.runbook == "runbooks/BudgetExhausted.md"
    assert block.scope.key == "tenant=acme"
    assert alerts(records)[2].runbook == "runbooks/BudgetExhausted.md"


def test_threshold_fires_on_the_call_that_crosses_it() -> None:
    job = SpendJob([daily()])
    assert feed(job, 4) == []  # $0.40
    crossing = feed(job, 1, first_offset=4)  # $0.50
    assert [a.details["threshold"] for a in alerts(crossing)] == [0.5]


def test_one_call_crossing_several_thresholds_fires_each() -> None:
    job = SpendJob([daily()])
    records = feed(job, 1, cost=Decimal("0.85"))
    assert [a.details.get("threshold") for a in alerts(records)] == [0.5, 0.8]


def test_soft_only_budget_fires_critical_at_100_percent_and_never_blocks() -> None:
    job = SpendJob([daily(hard_limit=False)])
    records = feed(job, 30)
    assert [(a.kind, a.severity) for a in alerts(records)][-1] == (
        "BudgetThresholdCrossed",
        Severity.CRITICAL,
    )
    assert controls(records) == []


def test_replayed_offsets_do_not_fire_again() -> None:
    job = SpendJob([daily()])
    first = feed(job, 12)
    assert len(alerts(first)) == 3
    assert feed(job, 12) == []  # the same offsets again


def test_crash_after_publishing_before_saving_state_reemits_the_same_ids() -> None:
    job = SpendJob([daily()])
    feed(job, 3)
    saved = {k: json.loads(json.dumps(job.to_state(k))) for k in job.pop_dirty()}
    before_crash = feed(job, 10, first_offset=3)
    restarted = SpendJob([daily()])
    for key, doc in saved.items():
        restarted.from_state(key, doc)
    after = feed(restarted, 13)  # redelivered from the last committed offset
    assert [r.model_dump(exclude={"fired_at", "issued_at"}) for r in after] == [
        r.model_dump(exclude={"fired_at", "issued_at"}) for r in before_crash
    ]


def test_state_round_trip_keeps_fired_thresholds() -> None:
    job = SpendJob([daily()])
    assert len(alerts(feed(job, 6))) == 1
    restored = SpendJob([daily()])
    for key in job.pop_dirty():
        restored.from_state(key, json.loads(json.dumps(job.to_state(key))))
    more = feed(restored, 3, first_offset=6)  # $0.90: only 80% is new
    assert [a.details["threshold"] for a in alerts(more)] == [0.8]


def test_tick_unblocks_at_window_end_and_the_next_window_starts_from_zero() -> None:
    job = SpendJob([daily()])
    blocked = feed(job, 10)
    assert len(controls(blocked)) == 1
    assert job.tick(utc(2026, 11, 21, 23, 59, 59, 999999)) == []
    [unblock] = job.tick(utc(2026, 11, 22))
    assert isinstance(unblock, ControlMessage)
    assert (unblock.action, unblock.reason, unblock.scope.key) == (
        ControlAction.UNBLOCK,
        ControlReason.WINDOW_RESET,
        "tenant=acme",
    )
    assert job.tick(utc(2026, 11, 22, 0, 0, 1)) == []
    next_day = []
    for i in range(5):
        next_day += job.observe(
            llm(utc(2026, 11, 22, 1, i)), TEN_CENTS, 0, 100 + i, utc(2026, 11, 22, 2)
        )
    [half] = alerts(next_day)
    assert half.window == "day:2026-11-22" and half.observed == 0.5
    assert half.alert_id != alerts(blocked)[0].alert_id


def test_spend_from_the_next_window_unblocks_even_before_tick() -> None:
    job = SpendJob([daily()])
    feed(job, 10)
    records = job.observe(
        llm(utc(2026, 11, 22, 0, 0, 1)), TEN_CENTS, 0, 50, utc(2026, 11, 21, 23, 59)
    )
    assert [(c.action, c.reason) for c in controls(records)] == [
        (ControlAction.UNBLOCK, ControlReason.WINDOW_RESET)
    ]


def test_raising_the_limit_unblocks_and_rearms_thresholds() -> None:
    job = SpendJob([daily(limit=1.0)])
    first = feed(job, 10)  # $1.00: exhausted and blocked
    records = job.set_budget(daily(limit=4.0), NOW)
    assert [(c.action, c.reason) for c in controls(records)] == [
        (ControlAction.UNBLOCK, ControlReason.MANUAL)
    ]
    assert alerts(records) == []  # $1.00 is 25% of $4: nothing crossed, 50% and 80% re-armed
    more = feed(job, 30, first_offset=10)  # up to $4.00
    assert [a.details.get("threshold") for a in alerts(more)] == [0.5, 0.8, None]
    assert [c.action for c in controls(more)] == [ControlAction.BLOCK]
    ids = {a.alert_id for a in alerts(first)}
    assert not ids & {a.alert_id for a in alerts(more)}  # new limit, new ids


def test_lowering_the_limit_below_spend_fires_now_and_blocks() -> None:
    job = SpendJob([daily(limit=10.0)])
    assert feed(job, 6) == []  # $0.60 of $10
    records = job.set_budget(daily(limit=0.7), NOW)  # 0.60 >= 50% and 80% of 0.70
    assert [a.details.get("threshold") for a in alerts(records)] == [0.5, 0.8]
    assert controls(records) == []
    records = job.set_budget(daily(limit=0.5), NOW)
    assert [a.kind for a in alerts(records)] == ["BudgetExhausted"]
    assert [c.action for c in controls(records)] == [ControlAction.BLOCK]


def test_a_budget_added_mid_window_is_evaluated_against_the_spend_so_far() -> None:
    job = SpendJob()
    feed(job, 9)  # $0.90, no budgets yet
    records = job.set_budget(daily(), NOW)
    assert [a.details.get("threshold") for a in alerts(records)] == [0.5, 0.8]


def test_removing_a_budget_lifts_its_block() -> None:
    job = SpendJob([daily()])
    feed(job, 10)
    records = job.remove_budget("acme-daily", NOW)
    assert [(c.action, c.reason) for c in controls(records)] == [
        (ControlAction.UNBLOCK, ControlReason.MANUAL)
    ]
    assert feed(job, 5, first_offset=10) == []


def test_two_budgets_on_one_scope_hold_the_block_until_the_later_end() -> None:
    monthly = budget(
        name="acme-monthly", scope="tenant", tenant_id="acme", window="month", limit_usd=1.5
    )
    job = SpendJob([daily(), monthly])
    records = feed(job, 15)  # day exhausted at $1.00, month at $1.50
    blocks = controls(records)
    assert [b.until for b in blocks] == [utc(2026, 11, 22), utc(2026, 12, 1)]
    assert job.tick(utc(2026, 11, 22, 0, 1)) == []  # the daily block ends, the monthly holds
    records = job.set_budget(
        budget(name="acme-monthly", scope="tenant", tenant_id="acme", window="month", limit_usd=50),
        NOW,
    )
    assert [c.action for c in controls(records)] == [ControlAction.UNBLOCK]


def test_releasing_the_later_block_reasserts_the_earlier_until() -> None:
    monthly = budget(
        name="acme-monthly", scope="tenant", tenant_id="acme", window="month", limit_usd=0.5
    )
    job = SpendJob([daily(), monthly])
    feed(job, 10)  # monthly exhausted at $0.50 (until 1 Dec), daily at $1.00 (until 22 Nov)
    records = job.remove_budget("acme-monthly", NOW)
    [reassert] = controls(records)
    assert (reassert.action, reassert.until) == (ControlAction.BLOCK, utc(2026, 11, 22))


def test_user_budget_star_applies_to_each_user_separately() -> None:
    per_user = budget(
        name="per-user", scope="user", tenant_id="acme", user_id="*", window="day", limit_usd=0.3
    )
    job = SpendJob([per_user])
    records = feed(job, 3, user="u1") + feed(job, 2, user="u2", first_offset=3)
    exhausted = [a for a in alerts(records) if a.kind == "BudgetExhausted"]
    assert [a.scope.key for a in exhausted] == ["tenant=acme/user=u1"]
    assert [c.scope.user_id for c in controls(records)] == ["u1"]
    assert feed(job, 1, user="u2", first_offset=5) != []  # u2 reaches $0.30 now


def test_user_budget_for_one_user_ignores_the_others() -> None:
    one = budget(
        name="vip", scope="user", tenant_id="acme", user_id="u7", window="day", limit_usd=0.2
    )
    job = SpendJob([one])
    assert feed(job, 5, user="u1") == []
    records = feed(job, 2, user="u7", first_offset=5)
    assert [a.details.get("threshold") for a in alerts(records)] == [
        0.5,
        0.8,
        None,
    ]  # None: exhausted


def test_budget_in_a_timezone_counts_its_local_day() -> None:
    berlin = budget(
        name="acme-berlin",
        scope="tenant",
        tenant_id="acme",
        window="day",
        limit_usd=0.3,
        timezone="Europe/Berlin",
    )
    job = SpendJob([berlin])
    now = utc(2026, 11, 22, 1)
    out = []
    for i, hour_minute in enumerate([(22, 50), (22, 59), (23, 1)]):  # 23:50, 23:59 | 00:01 Berlin
        out += job.observe(llm(utc(2026, 11, 21, *hour_minute)), TEN_CENTS, 0, i, now)
    # $0.20 on the 21st (Berlin), then a fresh day: nothing reaches $0.30
    assert [a.window for a in alerts(out)] == ["day:2026-11-21"]  # only the 50% of the 21st
    assert alerts(out)[0].details["timezone"] == "Europe/Berlin"


def test_exhaustion_of_a_window_already_over_alerts_but_does_not_block() -> None:
    job = SpendJob([daily()])
    records = feed(job, 10, now=utc(2026, 11, 23))  # replaying an old backlog
    assert [a.kind for a in alerts(records)][-1] == "BudgetExhausted"
    assert "already ended" in alerts(records)[-1].message
    assert controls(records) == []


def test_ids_are_deterministic_across_instances() -> None:
    a, b = SpendJob([daily()]), SpendJob([daily()])
    assert [r.model_dump() for r in feed(a, 10)] == [r.model_dump() for r in feed(b, 10)]


def test_evaluator_ignores_request_budgets_and_unknown_scopes() -> None:
    req = budget(name="req", scope="request", tenant_id="acme", max_tokens=10)
    ev = BudgetEvaluator([req])
    assert ev.budgets() == [] and ev.calendars() == set()
    assert ev.set_budget(req, NOW) == [] and ev.remove_budget("nope", NOW) == []


def test_ledger_rearm_matches_evaluating_every_update() -> None:
    """The room optimisation must not change which records are produced."""
    bs = [
        daily(limit=3.0),
        budget(
            name="u", scope="user", tenant_id="acme", user_id="*", window="hour", limit_usd=0.11
        ),
    ]
    fast = SpendJob(bs)
    slow = SpendJob(bs)
    slow.tracker.rearm = lambda *_: None  # type: ignore[method-assign]  # every event reports
    got_fast: list[Alert | ControlMessage] = []
    got_slow: list[Alert | ControlMessage] = []
    for i in range(300):
        back = timedelta(minutes=3) if i % 11 == 0 else timedelta(0)  # some late events
        ev = llm(utc(2026, 11, 21, 9) + timedelta(minutes=2 * i) - back, user=f"u{i % 4}")
        cost = Decimal(i % 7).scaleb(-2)
        now = utc(2026, 11, 21, 9) + timedelta(minutes=2 * i + 1)
        got_fast += fast.observe(ev, cost, 0, i, now) + fast.tick(now)
        got_slow += slow.observe(ev, cost, 0, i, now) + slow.tick(now)
        if i % 7 == 0:  # batches end: rollups drained, state written (both fold pending spend)
            fast.drain_rollups()
            fast.to_state("acme")
    assert len(controls(got_slow)) > 20 and len(alerts(got_slow)) > 50
    assert [r.model_dump() for r in got_fast] == [r.model_dump() for r in got_slow]


def test_a_budget_added_after_its_window_ended_does_not_alert_on_old_spend() -> None:
    job = SpendJob()
    feed(job, 9)  # $0.90 on 21 Nov
    assert job.set_budget(daily(), utc(2026, 11, 22, 8)) == []


def test_forget_drops_a_revoked_tenant_until_its_state_is_restored() -> None:
    job = SpendJob([daily()])
    feed(job, 6)
    saved = job.to_state("acme")
    job.forget("acme")
    assert job.to_state("acme") == {"ledger": None, "budgets": None}
    assert saved is not None
    job.from_state("acme", saved)
    assert [a.details["threshold"] for a in alerts(feed(job, 9))] == [0.8]  # 0..5 replayed


def test_state_keys_know_their_source_partition() -> None:
    job = SpendJob([daily()])
    job.observe(llm(utc(2026, 11, 21, 10)), TEN_CENTS, 7, 1, NOW)
    assert {k: job.partition_of(k) for k in job.pop_dirty()} == {"acme": 7}
    assert job.partition_of("partition:3") == 3 and job.partition_of("nobody") is None


class _CountedStates(dict):  # type: ignore[type-arg]
    """A tenant's budget states that count how often they are walked."""

    walks = 0

    def items(self):  # type: ignore[no-untyped-def]
        _CountedStates.walks += 1
        return super().items()


def test_tick_walks_the_states_only_when_a_window_ends() -> None:
    """User budgets keep a state per user (ids the producer's); the 1 s tick walked every
    state of every tenant, under the jobs' lock (0.1-0.3 s per tick at 100k users)."""
    per_user = budget(
        name="per-user", scope="user", tenant_id="acme", user_id="*", window="day", limit_usd=1.0
    )
    job = SpendJob([per_user])
    for u in range(3):
        feed(job, 10, first_offset=10 * u, user=f"u{u}")  # each user spends $1: blocked
    evaluator = job.evaluator
    states = _CountedStates(evaluator._states["acme"])  # noqa: SLF001 (the walk is the cost)
    evaluator._states["acme"] = states  # noqa: SLF001
    for second in range(5):
        assert job.tick(NOW + timedelta(seconds=second)) == []
    assert _CountedStates.walks <= 1  # before: 5 (one walk per tick)
    unblocks = job.tick(utc(2026, 11, 22))
    assert sorted(u.scope.key for u in controls(unblocks)) == [
        f"tenant=acme/user={u}" for u in ("u0", "u1", "u2")
    ]


def test_a_block_issued_again_in_its_window_has_an_id_of_its_own() -> None:
    """Limit $1 reached: BLOCK; raised to $4: UNBLOCK; lowered back to $1: BLOCK again, and
    the same again. The second BLOCK had the first one's id: the record sink stored it once,
    so the trail's latest word on the scope was the UNBLOCK while the agents were blocked
    (and `restore-blocks` would not restore it). The first block keeps its old id."""
    job = SpendJob([daily(limit=1.0)])
    issued = controls(feed(job, 10))
    for minutes, limit in ((1, 4.0), (2, 1.0), (3, 4.0), (4, 1.0)):
        issued += controls(job.set_budget(daily(limit=limit), NOW + timedelta(minutes=minutes)))
    assert [c.action for c in issued] == [ControlAction.BLOCK, ControlAction.UNBLOCK] * 2 + [
        ControlAction.BLOCK
    ]
    assert len({c.control_id for c in issued}) == 5
    # the first block's id is what it was before blocks were numbered (ids already stored)
    limit = usd_to_nano(Decimal("1.0"))
    old = record_id("control", "tenant=acme", "block", "acme-daily", "day:2026-11-21", limit)
    assert issued[0].control_id == old
    restored = SpendJob([daily(limit=1.0)])  # the count survives a restart
    for key in job.pop_dirty():
        restored.from_state(key, json.loads(json.dumps(job.to_state(key))))
    again = controls(restored.set_budget(daily(limit=4.0), NOW + timedelta(minutes=5)))
    assert [c.action for c in again] == [ControlAction.UNBLOCK]
    assert again[0].control_id not in {c.control_id for c in issued}


def test_a_budget_exhausted_again_in_its_window_pages_again() -> None:
    """The same sequence for the alert: exhausted at $1, raised, lowered back: the second
    BudgetExhausted had the first one's id, and the record sink and the notifier dropped it
    as a duplicate (on-call was not paged while the scope was blocked again)."""
    job = SpendJob([daily(limit=1.0)])
    fired = alerts(feed(job, 10))
    for minutes, limit in ((1, 4.0), (2, 1.0)):
        fired += alerts(job.set_budget(daily(limit=limit), NOW + timedelta(minutes=minutes)))
    exhausted = [a for a in fired if a.kind == "BudgetExhausted"]
    assert len(exhausted) == 2
    assert exhausted[0].alert_id != exhausted[1].alert_id
    # the first one's id is what it always was
    limit = usd_to_nano(Decimal("1.0"))
    old = record_id("BudgetExhausted", "acme-daily", "tenant=acme", "day:2026-11-21", limit)
    assert exhausted[0].alert_id == old
