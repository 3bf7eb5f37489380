"""What the report shows, read from the store: a handful of aggregate queries over a time
range, each ordered totally so that the same store and range give the same report.

Times are event time where the row has one (`occurred_at` of events, the window of an
alert or drift score), the store's receive time for dead letters, and the transition time
for breakers; all in UTC.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from agentaudit.report.burn import Burn
from agentaudit.store.protocol import Store

MAX_SERIES = 6  # stacked series in the spend chart; the rest are summed as "other"
MAX_MODELS = 12
MAX_DRIFT = 15
_STEPS = [timedelta(minutes=m) for m in (1, 5, 15)] + [timedelta(hours=h) for h in (1, 6, 24)]
MAX_BUCKETS = 100


@dataclass(frozen=True)
class Range:
    """The report's time range [since, until) in UTC, and an optional tenant filter."""

    since: datetime
    until: datetime
    tenant: str | None = None

    def params(self) -> dict[str, Any]:
        p: dict[str, Any] = {"since": self.since, "until": self.until}
        if self.tenant:
            p["tenant"] = self.tenant
        return p

    def where(self, column: str) -> str:
        """`column` within the range (and the tenant, if any), as a bound-parameter filter."""
        cond = (
            f"{column} >= {{since:DateTime64(6, 'UTC')}} "
            f"AND {column} < {{until:DateTime64(6, 'UTC')}}"
        )
        return cond + (" AND tenant_id = {tenant:String}" if self.tenant else "")

    @property
    def step(self) -> timedelta:
        """The spend chart's bucket: the smallest step that keeps it to `MAX_BUCKETS` bars."""
        span = self.until - self.since
        return next((s for s in _STEPS if span / s <= MAX_BUCKETS), _STEPS[-1])


@dataclass
class ReportData:
    """Everything the page draws. Lists are in display order."""

    range: Range
    store: str
    generated_at: datetime
    totals: dict[str, float] = field(default_factory=dict)
    series: list[str] = field(default_factory=list)
    spend_buckets: dict[datetime, dict[str, float]] = field(default_factory=dict)
    models: list[tuple[str, float, int]] = field(default_factory=list)  # model, usd, calls
    burns: list[Burn] | None = None  # None: the budgets were not known
    budgets_note: str = ""
    alerts: list[dict[str, Any]] = field(default_factory=list)
    breakers: list[dict[str, Any]] = field(default_factory=list)
    drift: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[tuple[str, int, str]] = field(default_factory=list)  # reason, n, example
    blocks: list[dict[str, Any]] = field(default_factory=list)


def _dicts(store: Store, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    result = store.query(sql, params)
    return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def first_event(store: Store, tenant: str | None) -> datetime | None:
    """When the first stored event (of `tenant`) happened; None for an empty trail."""
    where = "WHERE tenant_id = {tenant:String}" if tenant else ""
    rows = store.query(
        f"SELECT count(), min(occurred_at) FROM agentaudit.events {where}",
        {"tenant": tenant} if tenant else {},
    ).result_rows
    return _utc(rows[0][1]) if rows and rows[0][0] else None


def read(store: Store, rng: Range, store_name: str, now: datetime) -> ReportData:
    """Run the report's queries over `rng` (budget burn is added by the caller)."""
    data = ReportData(range=rng, store=store_name, generated_at=now)
    p = rng.params()
    data.totals = _totals(store, rng, p)
    _spend(store, rng, p, data)
    data.models = [
        (str(m), float(u), int(n))
        for m, u, n in store.query(
            "SELECT if(response_model != '', response_model, request_model) AS model, "
            "toFloat64(sum(cost_usd)) AS usd, count() AS calls FROM agentaudit.events "
            f"WHERE type = 'llm_call' AND {rng.where('occurred_at')} "
            f"GROUP BY model ORDER BY usd DESC, model LIMIT {MAX_MODELS}",
            p,
        ).result_rows
    ]
    # An alert is placed at the end of the window it judged, or when it fired if that was
    # earlier (a budget's window ends tomorrow): when the condition was seen, in event time.
    data.alerts = _dicts(
        store,
        (
            "SELECT alert_id, kind, severity, tenant_id, scope_key, least(fired_at, "
            "window_end) AS at, "
            "fired_at, message, runbook FROM agentaudit.alerts "
            f"WHERE {rng.where('least(fired_at, window_end)')} "
            "ORDER BY at, alert_id LIMIT 1 BY alert_id"
        ),
        p,
    )
    data.breakers = _dicts(
        store,
        (
            "SELECT at, tenant_id, agent_id, tool, from_state, to_state, signal, observed, "
            "threshold "
            f"FROM agentaudit.breaker_transitions WHERE {rng.where('at')} "
            "ORDER BY at, transition_id LIMIT 1 BY transition_id"
        ),
        p,
    )
    data.drift = _dicts(
        store,
        (
            "SELECT tenant_id, agent_id, subject, agent_version, model, test, statistic, p_value, "
            "reference_n, current_n, drifted, window_start, window_end FROM ("
            " SELECT * FROM agentaudit.drift_scores "
            f" WHERE {rng.where('window_end')} ORDER BY score_id LIMIT 1 BY score_id) "
            # the latest window of each test; then drifted first, most significant first
            "ORDER BY window_end DESC, score_id LIMIT 1 BY tenant_id, agent_id, subject, "
            "agent_version, model, test"
        ),
        p,
    )
    data.drift.sort(key=_drift_order)
    data.drift = data.drift[:MAX_DRIFT]
    data.dead_letters = [
        (str(r), int(n), str(d))
        for r, n, d in store.query(
            "SELECT reason, count() AS n, min(left(detail, 120)) AS example FROM "
            "agentaudit.dead_letters "
            f"WHERE {rng.where('received_at')} GROUP BY reason ORDER BY n DESC, reason",
            p,
        ).result_rows
    ]
    data.blocks = _dicts(
        store,
        (
            "SELECT scope_key, argMax(action, (issued_at, control_id)) AS action, "
            "argMax(reason, (issued_at, control_id)) AS reason, "
            "argMax(until, (issued_at, control_id)) AS block_until, max(issued_at) AS last_issued "
            "FROM agentaudit.control WHERE issued_at < {until:DateTime64(6, 'UTC')}"
            + (" AND tenant_id = {tenant:String}" if rng.tenant else "")
            + " GROUP BY scope_key HAVING action = 'block' "
            "AND (isNull(block_until) OR block_until > {until:DateTime64(6, 'UTC')}) "
            "ORDER BY scope_key"
        ),
        p,
    )
    for row in data.alerts + data.breakers:
        row["at"] = _utc(row["at"])
    return data


def _drift_order(row: dict[str, Any]) -> tuple[Any, ...]:
    p = row["p_value"]
    return (
        not row["drifted"],
        1.0 if p is None else float(p),
        -float(row["statistic"]),
        row["tenant_id"],
        row["agent_id"],
        row["subject"],
        row["agent_version"],
        row["test"],
    )


def _totals(store: Store, rng: Range, p: dict[str, Any]) -> dict[str, float]:
    events, usd, tenants, llm = store.query(
        "SELECT count(), toFloat64(sum(cost_usd)), uniqExact(tenant_id), "
        "countIf(type = 'llm_call') "
        f"FROM agentaudit.events WHERE {rng.where('occurred_at')}",
        p,
    ).result_rows[0]
    dead = store.query(
        f"SELECT count() FROM agentaudit.dead_letters WHERE {rng.where('received_at')}", p
    ).result_rows[0][0]
    return {
        "events": int(events),
        "spend_usd": float(usd or 0),
        "tenants": int(tenants),
        "llm_calls": int(llm),
        "dead_letters": int(dead),
    }


def _spend(store: Store, rng: Range, p: dict[str, Any], data: ReportData) -> None:
    """Spend per bucket, stacked by tenant (by agent when the report is for one tenant); the
    `MAX_SERIES` largest are their own series, the rest one "other"."""
    by = "agent_id" if rng.tenant else "tenant_id"
    step_s = int(rng.step.total_seconds())
    rows = store.query(
        f"SELECT toStartOfInterval(occurred_at, INTERVAL {step_s} SECOND) AS t, {by} AS s, "
        f"toFloat64(sum(cost_usd)) AS usd FROM agentaudit.events WHERE cost_usd > 0 AND "
        f"{rng.where('occurred_at')} GROUP BY t, s ORDER BY t, s",
        p,
    ).result_rows
    per_series: dict[str, float] = {}
    for _t, s, usd in rows:
        per_series[str(s)] = per_series.get(str(s), 0.0) + float(usd)
    ranked = sorted(per_series, key=lambda s: (-per_series[s], s))
    keep = set(ranked[:MAX_SERIES])
    data.series = ranked[:MAX_SERIES] + (["other"] if len(ranked) > MAX_SERIES else [])
    for t, s, usd in rows:
        name = str(s) if str(s) in keep else "other"
        bucket = data.spend_buckets.setdefault(_utc(t), {})
        bucket[name] = bucket.get(name, 0.0) + float(usd)
