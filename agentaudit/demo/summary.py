"""The demo's ending: a few lines of figures queried from ClickHouse (none from memory), and
the HTML report (`agentaudit report`) written next to the store for the charts and tables."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from rich.console import Console

from agentaudit.settings import Settings
from agentaudit.store.protocol import Store

REPORT_NAME = "report.html"


def write_report(settings: Settings, store: Store, now: datetime) -> Path:
    """The report of the demo's whole trail, with the budgets the demo published, written
    to `<data dir>/report.html`; returns its path."""
    from agentaudit.demo.budgets import DEMO_BUDGETS
    from agentaudit.report import build_report

    html = build_report(
        store,
        now=now,
        store_name=str(settings.store_dir),
        budgets=DEMO_BUDGETS,
        budgets_note="the budgets the demo published (agentaudit.demo.budgets)",
    )
    path = settings.data_dir / REPORT_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    return path.resolve()


def _one(store: Store, sql: str) -> list[tuple[object, ...]]:
    return [tuple(r) for r in store.query(sql).result_rows]


def print_summary(store: Store, console: Console) -> None:
    """Events, dead letters, alerts and breaker trips, one line each."""
    events = _one(
        store,
        "SELECT tenant_id, count() FROM agentaudit.events GROUP BY tenant_id ORDER BY tenant_id",
    )
    usd = _one(store, "SELECT toFloat64(sum(cost_usd)) FROM agentaudit.events")[0][0] or 0.0
    dead = _one(
        store,
        "SELECT reason, count() AS n FROM agentaudit.dead_letters GROUP BY reason ORDER BY "
        "n DESC, reason",
    )
    alerts = _one(
        store,
        "SELECT severity, uniqExact(alert_id) FROM agentaudit.alerts GROUP BY severity "
        "ORDER BY severity",
    )
    trips = _one(
        store, "SELECT count() FROM agentaudit.breaker_transitions WHERE to_state = 'open'"
    )[0][0]
    blocks = _one(store, "SELECT count() FROM agentaudit.control WHERE action = 'block'")[0][0]

    def listing(rows: list[tuple[object, ...]]) -> str:
        return ", ".join(f"{k} {n}" for k, n in rows) or "none"

    total = sum(int(str(n)) for _, n in events)
    console.print(
        f"events stored: {total} (${float(str(usd)):,.2f} of LLM spend; {listing(events)})",
        highlight=False,
    )
    console.print(
        f"dead letters: {sum(int(str(n)) for _, n in dead)} ({listing(dead)})", highlight=False
    )
    console.print(
        f"alerts: {sum(int(str(n)) for _, n in alerts)} ({listing(alerts)}); breaker trips: "
        f"{trips}; blocks issued: {blocks}",
        highlight=False,
    )
