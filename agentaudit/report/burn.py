"""Budget burn: each windowed budget's spend in the window that holds the report's end.

Budgets live on the compacted budgets topic (`agentaudit budgets list`), not in the store;
the caller passes them. Spend comes from the hourly rollup `agentaudit.spend_hourly` for
the window's whole hours and from `agentaudit.events` for the partial hours at its edges
(a report that ends mid-hour, a timezone with a half-hour offset), so a month window reads
hundreds of rollup rows, not a month of events. Windows are the spend job's own
(`stream_jobs.spend.windows`): calendar windows in the budget's timezone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from agentaudit.store.protocol import Store
from agentaudit_schemas.budgets import Budget, BudgetScope
from stream_jobs.spend.windows import Calendar, window_at

TOP_USERS = 3
_HOUR = timedelta(hours=1)
_US = timedelta(microseconds=1)


@dataclass(frozen=True)
class Burn:
    """One budget scope's spend in its current window against the limit."""

    budget: str
    scope: str  # "tenant acme", "user u-7 of hooli", "all tenants"
    window: str  # the spend job's window label, e.g. "day:2026-12-07"
    spent: float
    limit: float
    hard: bool
    thresholds: tuple[float, ...]

    @property
    def used(self) -> float:
        return self.spent / self.limit


def _floor_hour(at: datetime) -> datetime:
    return at.replace(minute=0, second=0, microsecond=0)


def _ceil_hour(at: datetime) -> datetime:
    floor = _floor_hour(at)
    return floor if floor == at else floor + _HOUR


def spend_between(
    store: Store,
    start: datetime,
    end: datetime,
    where: str,
    params: dict[str, Any],
    key: str,
    limit: int,
) -> list[tuple[str, float]]:
    """(key, USD) of spend in [start, end), highest first: rollup for whole hours, events for
    the edges. `where` filters columns both tables have (tenant_id, user_id); `key` is one such
    column or `''`."""
    a = min(_ceil_hour(start), end)
    b = max(a, _floor_hour(end))
    cond = f" AND {where}" if where else ""
    sql = (
        f"SELECT k, toFloat64(sum(usd)) AS usd FROM ("
        f" SELECT {key} AS k, sum(cost_usd) AS usd FROM agentaudit.spend_hourly"
        f"  WHERE hour >= {{a:DateTime('UTC')}} AND hour < {{b:DateTime('UTC')}}{cond} GROUP BY k"
        f" UNION ALL"
        f" SELECT {key} AS k, sum(cost_usd) AS usd FROM agentaudit.events"
        f"  WHERE ((occurred_at >= {{start:DateTime64(6, 'UTC')}} AND occurred_at < "
        f"{{a:DateTime64(6, 'UTC')}})"
        f"     OR (occurred_at >= {{b:DateTime64(6, 'UTC')}} AND occurred_at < "
        f"{{end:DateTime64(6, 'UTC')}}))"
        f"{cond} GROUP BY k"
        f") GROUP BY k ORDER BY usd DESC, k LIMIT {int(limit)}"
    )
    rows = store.query(sql, {**params, "a": a, "b": b, "start": start, "end": end}).result_rows
    return [(str(k), float(usd)) for k, usd in rows]


def burn(
    store: Store, budgets: Sequence[Budget], until: datetime, tenant: str | None
) -> list[Burn]:
    """The burn of every windowed budget (request ceilings have none) in the window holding
    the instant just before `until`; with `tenant`, only that tenant's budgets. A per-user
    budget ("*") shows its `TOP_USERS` highest-spending users."""
    out: list[Burn] = []
    at = until.astimezone(UTC) - _US  # `until` is exclusive: the window holding its last instant
    for b in sorted(budgets, key=lambda b: b.name):
        if b.window is None or b.limit_usd is None or (tenant and b.tenant_id != tenant):
            continue
        w = window_at(at, Calendar(b.window, b.timezone))
        end = min(until, w.end)
        where, params, key = "", {}, "''"
        if b.scope is not BudgetScope.GLOBAL:
            where, params = "tenant_id = {tenant:String}", {"tenant": b.tenant_id}
        if b.scope is BudgetScope.USER and b.user_id != "*":
            where += " AND user_id = {user:String}"
            params["user"] = b.user_id
        elif b.scope is BudgetScope.USER:
            key = "user_id"
        rows = spend_between(store, w.start, end, where, params, key, TOP_USERS)
        if b.scope is BudgetScope.USER and b.user_id == "*":
            scopes = [(f"user {user} of {b.tenant_id}", usd) for user, usd in rows]
            scopes = scopes or [(f"each user of {b.tenant_id}", 0.0)]
        else:
            spent = rows[0][1] if rows else 0.0
            label = {BudgetScope.GLOBAL: "all tenants", BudgetScope.TENANT: f"tenant {b.tenant_id}"}
            scopes = [(label.get(b.scope, f"user {b.user_id} of {b.tenant_id}"), spent)]
        out += [
            Burn(b.name, s, w.label, usd, b.limit_usd, b.hard_limit, tuple(b.thresholds))
            for s, usd in scopes
        ]
    return out
