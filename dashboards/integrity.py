"""Audit integrity: checkpoint freshness, what the checkpoints sign, auditor access."""

from __future__ import annotations

from grafana_foundation_sdk.models.dashboard import Dashboard

from dashboards.panels import TENANT, Sql, board, sql_panel
from dashboards.query import Format

UID = "agentaudit-integrity"

# Newest checkpoint per chain (tenant, partition), over all time: freshness is about now.
_CHAINS = (
    "SELECT tenant_id, kafka_partition, max(signed_at) AS last_signed, "
    "max(tree_size) AS signed_rows, argMax(is_end, signed_at) AS ended "
    f"FROM agentaudit.checkpoints WHERE {TENANT} GROUP BY tenant_id, kafka_partition"
)
_AUDITORS = f"FROM agentaudit.auditor_queries WHERE $__timeFilter(occurred_at) AND {TENANT}"


def build() -> Dashboard:
    """The Audit integrity dashboard."""
    return board(
        UID,
        "agentaudit / Audit integrity",
        "Is the trail being signed, and who read it? (`agentaudit verify` checks the trail "
        "itself; its results are not stored.)",
        [
            sql_panel(
                "stat",
                "Stalest checkpoint",
                "Seconds since the newest checkpoint of the stalest chain that has not ended "
                "(chains are signed every AGENTAUDIT_CHECKPOINT_INTERVAL_S, also when "
                "unchanged). Above 5 minutes fires CheckpointsStale.",
                Sql(
                    "SELECT max(dateDiff('second', last_signed, now())) AS seconds_ago "
                    f"FROM ({_CHAINS}) WHERE NOT ended"
                ),
                unit="s",
                width=6,
            ),
            sql_panel(
                "table",
                "Checkpoint freshness per chain",
                "Each chain's newest checkpoint: when, how many rows it signs, and the rows "
                "stored now (stored above signed for longer than an interval: see "
                "TrailUnsigned).",
                Sql(
                    "SELECT c.tenant_id, c.kafka_partition, c.last_signed, "
                    "dateDiff('second', c.last_signed, now()) AS age_s, c.signed_rows, "
                    "e.stored_rows, c.ended "
                    f"FROM ({_CHAINS}) AS c LEFT JOIN (SELECT tenant_id, kafka_partition, "
                    f"count() AS stored_rows FROM agentaudit.events WHERE {TENANT} "
                    "GROUP BY tenant_id, kafka_partition) AS e USING (tenant_id, kafka_partition) "
                    "ORDER BY age_s DESC LIMIT 100"
                ),
                width=18,
            ),
            sql_panel(
                "timeseries",
                "Checkpoints signed",
                "Checkpoints signed per interval, per tenant.",
                Sql(
                    "SELECT $__timeInterval(signed_at) AS time, tenant_id, count() AS checkpoints "
                    f"FROM agentaudit.checkpoints WHERE $__timeFilter(signed_at) AND {TENANT} "
                    "GROUP BY time, tenant_id ORDER BY time",
                    Format.TIME_SERIES,
                ),
                width=24,
            ),
            sql_panel(
                "timeseries",
                "Auditor queries",
                "Statements auditors ran per interval, by auditor and verdict (allowed, "
                "refused, failed), from the access log view agentaudit.auditor_queries.",
                Sql(
                    "SELECT $__timeInterval(occurred_at) AS time, concat(auditor, ' ', verdict) "
                    f"AS who, count() AS statements {_AUDITORS} GROUP BY time, who ORDER BY time",
                    Format.TIME_SERIES,
                ),
            ),
            sql_panel(
                "table",
                "Auditor access log",
                "The newest auditor statements: who, through which channel, the verdict and "
                "reason, rows returned and read.",
                Sql(
                    "SELECT occurred_at, auditor, channel, verdict, reason, statement, "
                    "result_rows, "
                    f"read_rows {_AUDITORS} ORDER BY occurred_at DESC LIMIT 100"
                ),
            ),
            sql_panel(
                "table",
                "Retention and legal hold",
                "Retention policy changes, holds and sweeps (agentaudit.retention_log) in the "
                "range.",
                Sql(
                    "SELECT changed_at, tenant_id, kind, subject, days, active, kafka_partition, "
                    "horizon, reason, actor FROM agentaudit.retention_log "
                    f"WHERE $__timeFilter(changed_at) AND {TENANT} ORDER BY changed_at DESC "
                    "LIMIT 100"
                ),
                width=24,
            ),
        ],
    )
