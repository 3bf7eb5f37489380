"""The demo's closing summary: every figure is queried from ClickHouse, none from memory."""

from __future__ import annotations

from rich.console import Console

from agentaudit.cli.output import render
from agentaudit.store.protocol import Store

SUMMARY_QUERIES: list[tuple[str, str]] = [
    ("Events per tenant and type",
     "SELECT tenant_id, type, count() AS events FROM agentaudit.events "
     "GROUP BY tenant_id, type ORDER BY tenant_id, events DESC"),
    ("Spend per tenant and model (USD, computed from the pricing table)",
     "SELECT tenant_id, provider, request_model AS model, count() AS calls, "
     "sum(input_tokens) AS input_tok, sum(cached_input_tokens) AS cached_tok, "
     "sum(output_tokens) AS output_tok, round(sum(cost_usd), 4) AS cost_usd "
     "FROM agentaudit.events WHERE type = 'llm_call' "
     "GROUP BY tenant_id, provider, model ORDER BY tenant_id, cost_usd DESC"),
    ("Dead letters",
     "SELECT reason, count() AS messages, any(left(detail, 70)) AS example "
     "FROM agentaudit.dead_letters GROUP BY reason ORDER BY messages DESC"),
    ("Hash chains (gap-free when rows = last_seq)",
     "SELECT tenant_id, count() AS rows, min(chain_seq) AS first_seq, max(chain_seq) AS last_seq, "
     "uniqExact(event_id) AS unique_ids FROM agentaudit.events GROUP BY tenant_id ORDER BY tenant_id"),
]


def print_summary(store: Store, console: Console) -> None:
    for title, sql in SUMMARY_QUERIES:
        result = store.query(sql)
        console.rule(f"[bold]{title}")
        render(list(result.column_names), list(result.result_rows), "table", console)
