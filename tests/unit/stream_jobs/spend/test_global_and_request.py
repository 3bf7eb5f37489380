"""Global budgets across partitions (partials + combiner) and per-request ceilings."""

from __future__ import annotations

import json
from decimal import Decimal

from agentaudit_schemas.budgets import Budget
from agentaudit_schemas.records import Alert, ControlMessage
from stream_jobs.spend.budgets import check_request
from stream_jobs.spend.global_spend import GlobalPartial, combine_partials
from stream_jobs.spend.job import GlobalBudgetJob, SpendJob
from tests.unit.stream_jobs.spend.factory import budget, llm, utc

NOW = utc(2026, 11, 21, 12)
GLOBAL = budget(name="all-tenants", scope="global", window="day", limit_usd=1.0)


def run_partition(
    job: SpendJob, tenant: str, partition: int, n: int, first: int = 0
) -> list[GlobalPartial]:
    for i in range(n):
        job.observe(
            llm(utc(2026, 11, 21, 10, i), tenant=tenant), Decimal("0.1"), partition, first + i, NOW
        )
    return job.drain_global_partials()


def test_global_budget_sums_partitions_owned_by_different_workers() -> None:
    w1, w2 = SpendJob([GLOBAL]), SpendJob([GLOBAL])
    agg = GlobalBudgetJob([GLOBAL])
    out = []
    for p in run_partition(w1, "acme", 0, 3) + run_partition(w2, "beta", 1, 2):
        out += agg.merge(p, NOW)  # $0.50 together: neither partition alone reaches 50%
    assert [(a.kind, a.details.get("threshold")) for a in out if isinstance(a, Alert)] == [
        ("BudgetThresholdCrossed", 0.5)
    ]
    out = []
    for p in run_partition(w1, "acme", 0, 5, first=3):
        out += agg.merge(p, NOW)
    blocks = [c for c in out if isinstance(c, ControlMessage)]
    assert [(c.scope.key, c.until) for c in blocks] == [("tenant=*", utc(2026, 11, 22))]
    assert "All tenants together" in [a for a in out if isinstance(a, Alert)][-1].message


def test_stale_and_duplicate_partials_change_nothing() -> None:
    w = SpendJob([GLOBAL])
    old = run_partition(w, "acme", 0, 4)
    new = run_partition(w, "acme", 0, 2, first=4)
    agg = GlobalBudgetJob([GLOBAL])
    assert len(agg.merge(new[0], NOW)) == 1  # 50% of the global budget
    assert agg.merge(old[0], NOW) == []
    latest = agg.combiner.latest(new[0].window.calendar)
    assert latest is not None and (latest.cost_nano, latest.calls) == (600_000_000, 6)
    assert agg.merge(new[0], NOW) == []
    assert combine_partials(old + new + new) == {new[0].window: (600_000_000, 7200, 6)}


def test_partition_partials_are_replay_safe_and_survive_restart() -> None:
    w = SpendJob([GLOBAL])
    run_partition(w, "acme", 0, 3)
    saved = {k: json.loads(json.dumps(w.to_state(k))) for k in w.pop_dirty()}
    assert "partition:0" in saved
    again = SpendJob([GLOBAL])
    for k, doc in saved.items():
        again.from_state(k, doc)
    [p] = run_partition(again, "acme", 0, 5)  # offsets 0..2 redelivered, 3..4 new
    assert (p.cost_nano, p.calls, p.as_of_offset) == (500_000_000, 5, 4)
    assert GlobalPartial.from_dict(json.loads(json.dumps(p.to_dict()))) == p


def test_aggregator_state_round_trip_and_budget_added_later() -> None:
    w = SpendJob([GLOBAL])
    agg = GlobalBudgetJob()
    for p in run_partition(w, "acme", 0, 9):
        assert agg.merge(p, NOW) == []  # no global budget yet
    restored = GlobalBudgetJob()
    restored.from_state(json.loads(json.dumps(agg.to_state())))
    records = restored.set_budget(GLOBAL, NOW)  # evaluated at once against $0.90
    assert [a.details.get("threshold") for a in records if isinstance(a, Alert)] == [0.5, 0.8]
    assert restored.tick(utc(2026, 11, 23)) == []


def test_global_calendars_are_not_counted_without_global_budgets() -> None:
    w = SpendJob()
    run_partition(w, "acme", 0, 3)
    assert w.drain_global_partials() == [] and not w.tracker.partitions.active


def req(name: str, **limits: object) -> Budget:
    return budget(name=name, scope="request", tenant_id="acme", **limits)


def test_check_request_ceilings() -> None:
    budgets = [req("b-cost", max_cost_usd=0.05), req("a-tokens", max_tokens=8000)]
    assert (
        check_request(budgets, "acme", tokens=8000, cost_usd=Decimal("0.05")) is None
    )  # at the ceiling: fits
    v = check_request(budgets, "acme", tokens=8001, cost_usd=Decimal("0.01"))
    assert v is not None and (v.budget, v.metric, v.limit, v.observed) == (
        "a-tokens",
        "tokens",
        8000.0,
        8001.0,
    )
    v = check_request(budgets, "acme", tokens=10, cost_usd=Decimal("0.050000001"))
    assert v is not None and (v.budget, v.metric, v.limit) == ("b-cost", "cost_usd", 0.05)
    assert "0.05" in v.message and "b-cost" in v.message
    assert (
        check_request(budgets, "beta", tokens=10**6, cost_usd=9.0) is None
    )  # another tenant's budgets


def test_check_request_user_scoped_and_windowed_budgets_ignored() -> None:
    budgets = [
        budget(name="vip", scope="request", tenant_id="acme", user_id="u7", max_tokens=100),
        budget(name="daily", scope="tenant", tenant_id="acme", window="day", limit_usd=0.01),
    ]
    assert check_request(budgets, "acme", tokens=500, cost_usd=1.0, user_id="u1") is None
    v = check_request(budgets, "acme", tokens=500, cost_usd=1.0, user_id="u7")
    assert v is not None and v.budget == "vip"
