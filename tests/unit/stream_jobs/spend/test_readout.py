"""Reading spend totals out of persisted `SpendJob` state (what the changelog holds)."""

from __future__ import annotations

import json
from collections import defaultdict
from decimal import Decimal

import pytest

from agentaudit_schemas.budgets import WindowKind
from stream_jobs.spend.job import SpendJob
from stream_jobs.spend.readout import applied_position, spend_cells, tenant_totals
from stream_jobs.spend.windows import Calendar, window_at
from tests.unit.stream_jobs.spend.factory import budget, llm, tool, utc

NOW = utc(2026, 11, 21, 12)


def _persisted(job: SpendJob, key: str) -> dict:  # type: ignore[type-arg]
    """The value as the changelog carries it: JSON text, read back."""
    return json.loads(json.dumps(job.to_state(key)))


def test_tenant_totals_are_the_sums_per_window_of_each_kind() -> None:
    job = SpendJob()
    costs = [
        Decimal("0.000437500"),
        Decimal("0.001000001"),
        Decimal("0.25"),
        Decimal("0.000000007"),
    ]
    times = [
        utc(2026, 11, 21, 9, 59),
        utc(2026, 11, 21, 10, 1),
        utc(2026, 11, 21, 10, 30),
        utc(2026, 11, 21, 11, 0),
    ]
    expected: dict[str, Decimal] = defaultdict(Decimal)
    for offset, (at, cost) in enumerate(zip(times, costs, strict=True)):
        job.observe(llm(at, tenant="acme"), cost, 2, offset, NOW)
        for kind in WindowKind:
            expected[window_at(at, Calendar(kind)).label] += cost
    job.observe(llm(times[0], tenant="globex"), Decimal(9), 1, 0, NOW)  # another tenant's key
    job.observe(tool(times[-1], tenant="acme"), Decimal(0), 2, 9, NOW)  # no spend, offset moves

    state = _persisted(job, "acme")
    assert tenant_totals(state) == dict(expected)
    assert len(expected) == 3 + 1 + 1  # hours 09, 10, 11; one day; one month
    assert applied_position(state) == (2, 9)
    users = [c for c in spend_cells(state) if c.dimension == "user" and c.window_kind == "day"]
    assert [(c.key, c.cost_usd, c.calls) for c in users] == [("u1", sum(costs), 4)]


def test_windows_of_another_timezone_are_kept_apart() -> None:
    job = SpendJob(
        [
            budget(
                name="b",
                scope="tenant",
                tenant_id="acme",
                window="day",
                limit_usd=100,
                timezone="Asia/Tokyo",
            )
        ]
    )
    at = utc(2026, 11, 21, 20)  # 05:00 on the 22nd in Tokyo
    job.observe(llm(at, tenant="acme"), Decimal("1.5"), 0, 0, NOW)
    job.observe(llm(utc(2026, 11, 21, 21), tenant="acme"), Decimal(2), 0, 1, NOW)
    state = _persisted(job, "acme")
    assert tenant_totals(state)["day:2026-11-21"] == Decimal("3.5")
    assert tenant_totals(state, timezone="Asia/Tokyo") == {"day:2026-11-22": Decimal("3.5")}


def test_states_without_a_ledger_read_as_empty() -> None:
    assert tenant_totals({"ledger": None, "budgets": {"v": 1, "s": []}}) == {}
    assert applied_position({"ledger": None}) is None
    assert spend_cells({"v": 1, "w": [], "p": 0}) == []  # a `partition:<n>` value


def test_an_unknown_state_version_is_refused() -> None:
    with pytest.raises(ValueError, match="version 2"):
        tenant_totals({"ledger": {"v": 2, "p": 0, "o": 0, "wm": 0, "w": []}})
