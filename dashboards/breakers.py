"""Breakers and kill switch: breaker trips, breakers open now, blocks in force."""

from __future__ import annotations

from grafana_foundation_sdk.models.dashboard import Dashboard

from dashboards.panels import TENANT, Sql, board, sql_panel
from dashboards.query import Format

UID = "agentaudit-breakers"

# Current state = the newest row per scope (migrations 0005, 0006): not limited to the time
# range, since a breaker opened yesterday and never closed is still open.
_BREAKER_STATE = (
    "SELECT scope_key, argMax(to_state, at) AS state, argMax(signal, at) AS signal, "
    "argMax(observed, at) AS observed, argMax(threshold, at) AS threshold, max(at) AS since "
    f"FROM agentaudit.breaker_transitions WHERE {TENANT} GROUP BY scope_key"
)
# The latest message per scope in the order the agents read them (the topic's, as the sink
# stored them: `ingested_at`, then `kafka_offset`), not by `issued_at`: that is each issuer's
# own clock, and with a jobs host a few seconds ahead an UNBLOCK written after a BLOCK carries
# an earlier stamp (the panel showed a scope blocked while the agents ran). As restore-blocks.
_ORDER = "(ingested_at, kafka_offset)"
_BLOCKS = (
    f"SELECT scope_key, argMax(action, {_ORDER}) AS last_action, "
    f"argMax(reason, {_ORDER}) AS reason, argMax(issued_by, {_ORDER}) AS issued_by, "
    f"argMax(issued_at, {_ORDER}) AS since, argMax(until, {_ORDER}) AS until, "
    f"argMax(runbook, {_ORDER}) AS runbook "
    f"FROM agentaudit.control WHERE {TENANT} GROUP BY scope_key"
)


def build() -> Dashboard:
    """The Breakers and kill switch dashboard."""
    return board(
        UID,
        "agentaudit / Breakers and kill switch",
        "Circuit-breaker transitions and the kill switch's blocks (control messages).",
        [
            sql_panel(
                "stat",
                "Breakers open now",
                "Breakers whose newest transition is open or half_open (any time, not only "
                "the range): their scopes' calls are refused or probing.",
                Sql(
                    "SELECT countIf(state IN ('open', 'half_open')) AS open FROM "
                    f"({_BREAKER_STATE})"
                ),
                width=6,
            ),
            sql_panel(
                "stat",
                "Blocks in force",
                "Scopes whose newest control message is a block that has not expired: the "
                "SDK refuses their calls.",
                Sql(
                    f"SELECT count() AS blocks FROM ({_BLOCKS}) "
                    "WHERE last_action = 'block' AND (until IS NULL OR until > now())"
                ),
                width=6,
            ),
            sql_panel(
                "timeseries",
                "Breaker trips",
                "Transitions to open per interval, by the signal that tripped them (error_rate, "
                "loop, cost_velocity, token_flood). The first open of a scope fires BreakerOpen.",
                Sql(
                    "SELECT $__timeInterval(at) AS time, signal, count() AS trips "
                    "FROM agentaudit.breaker_transitions "
                    f"WHERE $__timeFilter(at) AND {TENANT} AND to_state = 'open' "
                    "GROUP BY time, signal ORDER BY time",
                    Format.TIME_SERIES,
                ),
                width=12,
            ),
            sql_panel(
                "table",
                "Open breakers",
                "Every breaker whose newest transition is open or half_open, with what moved it.",
                Sql(
                    f"SELECT * FROM ({_BREAKER_STATE}) WHERE state IN ('open', 'half_open') "
                    "ORDER BY since DESC LIMIT 100"
                ),
                width=24,
            ),
            sql_panel(
                "table",
                "Blocks in force (detail)",
                "Scopes blocked now: by whom (a job or cli:<user>), why, since when and until "
                "when (empty = until an unblock). Lift a manual block with agentaudit unblock.",
                Sql(
                    f"SELECT * FROM ({_BLOCKS}) "
                    "WHERE last_action = 'block' AND (until IS NULL OR until > now()) "
                    "ORDER BY since DESC LIMIT 100"
                ),
                width=24,
            ),
            sql_panel(
                "timeseries",
                "Control messages",
                "Blocks and unblocks per interval, by reason (breaker_open, budget_exhausted, "
                "manual, …).",
                Sql(
                    "SELECT $__timeInterval(issued_at) AS time, concat(action, ' ', reason) "
                    "AS what, "
                    f"count() AS messages FROM agentaudit.control WHERE $__timeFilter(issued_at) "
                    f"AND {TENANT} GROUP BY time, what ORDER BY time",
                    Format.TIME_SERIES,
                ),
                width=24,
            ),
        ],
    )
