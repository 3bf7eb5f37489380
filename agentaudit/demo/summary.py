"""The demo's closing summary: every figure is queried from ClickHouse, none from memory."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from rich.console import Console

from agentaudit.cli.output import render
from agentaudit.store.protocol import Store

SUMMARY_QUERIES: list[tuple[str, str]] = [
    ("Events per tenant and type",
     ("SELECT tenant_id, type, count() AS events FROM agentaudit.events "
     "GROUP BY tenant_id, type ORDER BY tenant_id, events DESC")),
    ("Spend per tenant and model (USD, computed from the pricing table)",
     ("SELECT tenant_id, provider, request_model AS model, count() AS calls, "
     "sum(input_tokens) AS input_tok, sum(cached_input_tokens) AS cached_tok, "
     "sum(output_tokens) AS output_tok, round(sum(cost_usd), 4) AS cost_usd "
     "FROM agentaudit.events WHERE type = 'llm_call' "
     "GROUP BY tenant_id, provider, model ORDER BY tenant_id, cost_usd DESC")),
    ("Dead letters",
     ("SELECT reason, count() AS messages, any(left(detail, 70)) AS example "
     "FROM agentaudit.dead_letters GROUP BY reason ORDER BY messages DESC")),
    ("Alerts (deduplicated by id; runbooks/<kind>.md says what to do)",
     ("SELECT tenant_id, kind, severity, count() AS alerts, uniqExact(scope_key) AS scopes, "
     "min(fired_at) AS first_fired FROM agentaudit.alerts "
     "GROUP BY tenant_id, kind, severity ORDER BY tenant_id, kind")),
    (("Drift scores: every gold-set score, and the behaviour scores that drifted "
      "(the rest are in agentaudit.drift_scores)"),
     # Few, short columns: the table has to stay readable in an 80-column terminal.
     ("SELECT tenant_id AS tenant, agent_id AS agent, subject, agent_version AS version, "
     "concat(test, ' ', toString(round(statistic, 2)), ' p=', toString(round(p_value, 4))) AS test, "
     "drifted, concat(toString(reference_n), '/', toString(current_n)) AS `ref/cur`, "
     "formatDateTime(window_start, '%H:%i') AS window "
     "FROM (SELECT * FROM agentaudit.drift_scores ORDER BY score_id LIMIT 1 BY score_id) "
     "WHERE drifted OR startsWith(subject, 'goldset:') "
     "ORDER BY tenant, agent, subject, window_start, version, test")),
    ("Circuit breakers (every transition)",
     ("SELECT tenant_id, agent_id, tool, from_state || ' → ' || to_state AS transition, signal, "
     "round(observed, 2) AS observed, threshold FROM agentaudit.breaker_transitions ORDER BY at")),
    ("Kill switch: control messages (the SDK refuses blocked scopes)",
     ("SELECT scope_key AS scope, action, reason, toString(until) AS until FROM agentaudit.control "
     "ORDER BY issued_at")),
    ("Hash chains, one per tenant and partition (gap-free when rows = sum_last_seq)",
     ("SELECT tenant_id, sum(n) AS rows, count() AS chains, sum(last) AS sum_last_seq FROM ("
     "SELECT tenant_id, kafka_partition, count() AS n, max(chain_seq) AS last FROM agentaudit.events "
     "GROUP BY tenant_id, kafka_partition) GROUP BY tenant_id ORDER BY tenant_id")),
]


def print_summary(store: Store, console: Console) -> None:
    for title, sql in SUMMARY_QUERIES:
        result = store.query(sql)
        console.rule(f"[bold]{title}")
        render(list(result.column_names), list(result.result_rows), "table", console)
    _print_budgets(store, console)


def _print_budgets(store: Store, console: Console) -> None:
    """Spend of each windowed demo budget's scope in the current window, against its limit."""
    from agentaudit.demo.budgets import DEMO_BUDGETS
    from stream_jobs.spend.windows import Calendar, window_at

    rows: list[Sequence[Any]] = []
    for b in DEMO_BUDGETS:
        if b.window is None or b.limit_usd is None:
            rows.append([b.name, b.scope.value, b.tenant_id or "*", "per call", "", f"≤ {b.max_tokens} tokens", ""])
            continue
        w = window_at(datetime.now(UTC), Calendar(b.window, b.timezone))
        where = "occurred_at >= {start:DateTime64(6, 'UTC')} AND occurred_at < {end:DateTime64(6, 'UTC')}"
        params: dict[str, object] = {"start": w.start, "end": w.end}
        if b.tenant_id:
            where += " AND tenant_id = {tenant:String}"
            params["tenant"] = b.tenant_id
        group = "user_id" if b.user_id == "*" else "''"
        top = store.query(f"SELECT sum(cost_usd) AS usd FROM agentaudit.events WHERE {where} "
                          f"GROUP BY {group} ORDER BY usd DESC LIMIT 1", params).result_rows  # fmt: skip
        spent = float(top[0][0]) if top else 0.0
        label = "top user" if b.user_id == "*" else ""
        rows.append([b.name, b.scope.value, b.tenant_id or "*", w.label, f"{spent:,.2f} {label}".strip(),
                     f"{b.limit_usd:,.2f} ({'hard' if b.hard_limit else 'soft'})", f"{spent / b.limit_usd:.0%}"])  # fmt: skip
    console.rule("[bold]Budgets: spend in the current window against the limit")
    render(["budget", "scope", "tenant", "window", "spent_usd", "limit_usd", "used"], rows, "table", console)
