"""Every dashboard panel and alert rule query runs on a store the demo populated, its macros
and variables expanded the way the ClickHouse plugin expands them (dashboards/macros.py), for
a fixed time range (the demo's last insert + 1 min, back 7 days) and tenant; the panels that
should show data return rows. The PromQL of the Prometheus panels and the ConsumerLag rule is
evaluated by Debian's promtool against synthetic series of the metrics the worker's /metrics
exports.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentaudit.settings import Settings
from agentaudit.store import ClickHouseStore, open_store
from dashboards import alerts, pipeline
from dashboards.macros import ALL, QueryContext, expand
from dashboards.render import JSON_DIR, ROOT

pytestmark = pytest.mark.integration

MAY_BE_EMPTY = {
    # The demo runs no auditor, sets no retention policy and places no hold.
    ("audit-integrity", "Auditor queries"): "the demo runs no auditor",
    ("audit-integrity", "Auditor access log"): "the demo runs no auditor",
    ("audit-integrity", "Retention and legal hold"): "the demo sets no retention or hold",
}
"""(dashboard, panel) → why it may legitimately be empty on the demo store."""


def _sql_panels() -> list[tuple[str, str, str]]:
    out = []
    for path in sorted((ROOT / JSON_DIR).glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel["targets"]:
                if "rawSql" in target:
                    out.append((path.stem, panel["title"], target["rawSql"]))
    return out


PANELS = _sql_panels()


@pytest.fixture(scope="module")
def demo(demo_data_dir: Path) -> Iterator[tuple[ClickHouseStore, QueryContext]]:
    with open_store(Settings(data_dir=demo_data_dir)) as store:
        (last,) = store.query("SELECT max(ingested_at) FROM agentaudit.events").result_rows[0]
        to = last + timedelta(minutes=1)
        yield store, QueryContext(to - timedelta(days=7), to, timedelta(minutes=5))


def _with(ctx: QueryContext, tenant: str | list[str]) -> QueryContext:
    return QueryContext(ctx.time_from, ctx.time_to, ctx.interval, {"tenant": tenant})


def test_every_panel_query_runs_and_the_ones_that_should_show_data_do(
    demo: tuple[ClickHouseStore, QueryContext],
) -> None:
    """All tenants (the dashboards' default), then one tenant selected (runs; may be empty)."""
    store, ctx = demo
    assert len(PANELS) >= 30
    empty = []
    for board, title, raw in PANELS:
        sql = expand(raw, _with(ctx, ALL))
        assert "$" not in sql, (board, title, sql)
        if not store.query(sql).result_rows and (board, title) not in MAY_BE_EMPTY:
            empty.append((board, title))
        store.query(expand(raw, _with(ctx, ["acme"])))
    assert empty == [], "panels without data on the demo store"


def test_every_alert_rule_query_runs(demo: tuple[ClickHouseStore, QueryContext]) -> None:
    """Each ClickHouse rule over its own window (10 min) ending at the demo's last insert; the
    pipeline rules return their measure (a row per chain, per reason, or the one heartbeat age)."""
    store, ctx = demo
    window = QueryContext(ctx.time_to - timedelta(seconds=alerts.WINDOW_S), ctx.time_to)
    rows = {}
    for rule in alerts.api_models():
        (a,) = [q for q in rule["data"] if q["refId"] == "A"]
        if a["datasourceUid"] == alerts.CLICKHOUSE_UID:
            rows[rule["title"]] = store.query(expand(a["model"]["rawSql"], window)).result_rows
    assert rows["DeadLetterRate"] and rows["CheckpointsStale"]
    assert len(rows["StreamJobsSilent"]) == 1
    assert sum(bool(r) for k, r in rows.items() if k in alerts.ALERT_KINDS) >= 10


# -- PromQL ------------------------------------------------------------------------------------

SERIES = [
    ('agentaudit_consumer_lag{group="sink",topic="events",partition="0"}', "5+0x10"),
    ('agentaudit_consumer_lag{group="sink",topic="events",partition="1"}', "7+0x10"),
    ("agentaudit_events_stored_total", "0+60x10"),
    ("agentaudit_sink_stuck_partitions", "0 0 0 1 1 1 1 2 2 1 1"),
    ('agentaudit_sink_stage_seconds_bucket{stage="insert",le="0.5"}', "0+10x10"),
    ('agentaudit_sink_stage_seconds_bucket{stage="insert",le="1"}', "0+20x10"),
    ('agentaudit_sink_stage_seconds_bucket{stage="insert",le="+Inf"}', "0+20x10"),
    ('agentaudit_stream_jobs_failed_total{job="spend"}', "0+1x10"),
    ('agentaudit_stream_jobs_failed_closes_total{job="drift"}', "0+3x10"),
    ("agentaudit_stream_jobs_invalid_total", "0+2x10"),
    ("agentaudit_stream_jobs_duplicates_total", "0+1x10"),
    ("agentaudit_stream_jobs_replayed_total", "0+5x10"),
    ('agentaudit_stream_jobs_late_total{job="spend"}', "0+3x10"),
    ('agentaudit_stream_jobs_late_total{job="drift"}', "0+0x10"),
    ('agentaudit_alert_delivery_pending{receiver="oncall-slack"}', "0 0 1 2 3 3 3 4 4 5 5"),
    ('agentaudit_alert_delivery_pending{receiver="alertmanager"}', "0+0x10"),
]
EXPECTED = {
    pipeline.CONSUMER_LAG: [('{group="sink",topic="events"}', 12)],
    pipeline.STORED_RATE: [("{}", 1)],
    pipeline.STAGE_P95: [('{stage="insert"}', 0.95)],
    # increase over 2m of a counter growing n per minute: 2n
    pipeline.JOBS_FAILED: [('{job="spend"}', 2), ('{job="drift close"}', 6)],
    pipeline.JOBS_SKIPPED: [
        ('{kind="invalid"}', 4),
        ('{kind="duplicate"}', 2),
        ('{kind="replayed"}', 10),
        ('{job="spend",kind="late (spend)"}', 6),
        ('{job="drift",kind="late (drift)"}', 0),
    ],
    alerts.PIPELINE_SPECS["ConsumerLag"].query: [('{group="sink",topic="events"}', 7)],
    alerts.PIPELINE_SPECS["SinkStalled"].query: [("{}", 1)],
    alerts.PIPELINE_SPECS["AlertDeliveryStalled"].query: [
        ('{receiver="oncall-slack"}', 3),  # at 5m; a receiver that keeps up stays at 0
        ('{receiver="alertmanager"}', 0),
    ],
}


def _promql_test(expr: str, samples: list[tuple[str, float]]) -> dict[str, Any]:
    return {
        # Grafana's $__rate_interval is at least 4 scrape intervals; 1m here (scrape 1m)
        "expr": expr.replace("$__rate_interval", "2m"),
        "eval_time": "5m",
        "exp_samples": [{"labels": labels, "value": value} for labels, value in samples],
    }


def test_promql_of_panels_and_rules_evaluates_in_promtool(tmp_path: Path) -> None:
    dashboard = json.loads((ROOT / JSON_DIR / "pipeline-health.json").read_text())
    in_panels = {t["expr"] for p in dashboard["panels"] for t in p["targets"] if "expr" in t}
    assert in_panels == set(pipeline.PROMQL)
    (tmp_path / "rules.yaml").write_text("groups: []\n")
    spec = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in SERIES],
                "promql_expr_test": [_promql_test(e, s) for e, s in EXPECTED.items()],
            }
        ],
    }
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(spec))
    done = subprocess.run(
        ["promtool", "test", "rules", "test.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
