"""Dashboards and alert rules as code: the committed files are what the code renders, they
decode with foundation-sdk, and they keep the ClickHouse plugin's and our own rules."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from grafana_foundation_sdk.cog import plugins
from grafana_foundation_sdk.models.dashboard import Dashboard
from typer.testing import CliRunner

from agentaudit.cli.dashboards import app
from dashboards import DASHBOARDS, alerts, query
from dashboards.macros import ALL, QueryContext, expand
from dashboards.render import (
    JSON_DIR,
    ROOT,
    RULES_API_FILE,
    RULES_FILE,
    differences,
    render,
    to_json,
)
from stream_jobs.alert_kinds import ALERT_KINDS, NON_ALERT_RUNBOOKS, PIPELINE_ALERTS

REPO = ROOT.parent
FILES = render()


def _dashboards() -> list[tuple[str, dict[str, Any]]]:
    return [
        (rel, json.loads((ROOT / rel).read_text()))
        for rel in sorted(FILES)
        if rel.startswith(f"{JSON_DIR}/")
    ]


def test_rerendering_reproduces_the_committed_files_byte_for_byte() -> None:
    assert len(DASHBOARDS) >= 6
    assert differences(ROOT, FILES) == [], "run `agentaudit dashboards build` and commit"


@pytest.mark.parametrize(("rel", "doc"), _dashboards(), ids=[r for r, _ in _dashboards()])
def test_each_dashboard_round_trips_through_foundation_sdk(rel: str, doc: dict[str, Any]) -> None:
    """`Dashboard.from_json` (with the SDK's panel and query plugins, and ours for ClickHouse)
    decodes the committed JSON into typed objects that encode back to the same JSON."""
    plugins.register_default_plugins()
    query.register()
    decoded = Dashboard.from_json(doc)
    assert to_json(decoded) == (ROOT / rel).read_text()
    targets = [t for p in decoded.panels or [] for t in getattr(p, "targets", None) or []]
    clickhouse = [t for t in targets if isinstance(t, query.ClickHouseQuery)]
    assert clickhouse and all(t.raw_sql for t in clickhouse)


@pytest.mark.parametrize(("rel", "doc"), _dashboards(), ids=[r for r, _ in _dashboards()])
def test_plugin_rules_hold(rel: str, doc: dict[str, Any]) -> None:
    """Datasources only through variables; uid and title; a description on every panel; the
    datasource and tenant variables on every dashboard; the tenant filter in every query on a
    tenant-scoped table."""
    assert doc["uid"] and doc["title"] and len(doc["uid"]) <= 40
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == query.PLUGIN_ID
    assert variables["tenant"]["datasource"]["uid"] == "${datasource}"
    assert variables["tenant"]["multi"] and variables["tenant"]["includeAll"]
    for panel in doc["panels"]:
        assert panel.get("description", "").strip(), panel["title"]
        for ref in [panel["datasource"], *(t["datasource"] for t in panel["targets"])]:
            assert ref["uid"] in ("${datasource}", "${prometheus}"), (panel["title"], ref)
            if ref["uid"] == "${prometheus}":
                assert ref["type"] == "prometheus" and "prometheus" in variables
            else:
                assert ref["type"] == query.PLUGIN_ID
        for target in panel["targets"]:
            if "rawSql" in target:
                assert target["editorType"] == "sql" and target["format"] in (0, 1)
    text = json.dumps(doc)
    assert '"uid": "agentaudit-clickhouse"' not in text  # no concrete uid in dashboards


def test_every_alert_kind_and_pipeline_alert_has_one_rule_with_an_existing_runbook() -> None:
    rules = alerts.api_models()
    kinds = [r["title"] for r in rules]
    assert sorted(kinds) == sorted([*ALERT_KINDS, *PIPELINE_ALERTS])
    assert len({r["uid"] for r in rules}) == len(rules)
    for r in rules:
        url = r["annotations"]["runbook_url"]
        assert url == f"runbooks/{r['title']}.md" and (REPO / url).is_file(), url
        assert r["condition"] == "B" and r["labels"]["kind"] == r["title"]
        (a,) = [q for q in r["data"] if q["refId"] == "A"]
        assert a["datasourceUid"] in (alerts.CLICKHOUSE_UID, alerts.PROMETHEUS_UID)
    reachable = {Path(r["annotations"]["runbook_url"]).stem for r in rules}
    every = {p.stem for p in (REPO / "runbooks").glob("*.md")}
    assert every - reachable == set(NON_ALERT_RUNBOOKS), "runbooks no rule reaches"


def test_rule_files_hold_the_same_rules_and_the_base_url_is_configurable() -> None:
    provisioned = yaml.safe_load(FILES[RULES_FILE])
    assert provisioned["apiVersion"] == 1
    (group,) = provisioned["groups"]
    api = json.loads(FILES[RULES_API_FILE])
    assert [r["uid"] for r in group["rules"]] == [r["uid"] for r in api]
    assert all("folderUID" not in r for r in group["rules"])
    based = alerts.api_models(runbook_base_url="https://git.example/agentaudit/blob/main/")
    assert based[0]["annotations"]["runbook_url"].startswith("https://git.example/agentaudit/")


def test_build_check_exits_1_when_a_committed_file_differs(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["build", "--out", str(tmp_path)]).exit_code == 0
    assert runner.invoke(app, ["build", "--out", str(tmp_path), "--check"]).exit_code == 0
    victim = tmp_path / JSON_DIR / "agent-operations.json"
    victim.write_text(victim.read_text().replace("Action success rate", "Action rate"))
    result = runner.invoke(app, ["build", "--out", str(tmp_path), "--check"])
    assert result.exit_code == 1 and "agent-operations.json" in result.output


# -- macros as the plugin expands them ---------------------------------------------------------

T0 = datetime(2014, 11, 12, 11, 45, 26, 371000, tzinfo=UTC)  # the plugin's macros_test.go times
T1 = datetime(2015, 11, 12, 11, 45, 26, 371000, tzinfo=UTC)


def test_backend_macros_expand_as_in_the_plugins_tests() -> None:
    ctx = QueryContext(T0, T1, timedelta(seconds=20))
    assert expand("$__fromTime", ctx) == "toDateTime(1415792726)"
    assert expand("$__toTime", ctx) == "toDateTime(1447328726)"
    assert expand("$__fromTime_ms", ctx) == "fromUnixTimestamp64Milli(1415792726371)"
    assert expand("$__toTime_ms", ctx) == "fromUnixTimestamp64Milli(1447328726371)"
    assert expand("$__timeInterval(col)", ctx) == (
        "toStartOfInterval(toDateTime(col), INTERVAL 20 second)"
    )
    assert expand("$__interval_s", QueryContext(T0, T1, timedelta(milliseconds=10))) == "1"
    assert expand("WHERE $__timeFilter(at)", ctx) == (
        "WHERE at >= toDateTime(1415792726) AND at <= toDateTime(1447328726)"
    )
    assert expand("$__unknown(x)", ctx) == "$__unknown(x)"


def test_conditional_all_and_variables_as_the_plugins_frontend() -> None:
    """CHDatasource.test.ts 'Conditional All', then the plugin's variable format."""
    sql = "where $__conditionalAll(f in ($v), $v) and $__conditionalAll(f in ($w), $w);"
    ctx = QueryContext(T0, T1, variables={"v": ["val1", "val2"], "w": ALL})
    assert expand(sql, ctx) == "where f in ('val1','val2') and 1=1;"
    one = QueryContext(T0, T1, variables={"tenant": ["acme"]})
    assert expand("$__conditionalAll(tenant_id IN (${tenant}), $tenant)", one) == (
        "tenant_id IN ('acme')"
    )
    assert expand("x = '$v'", QueryContext(T0, T1, variables={"v": "a"})) == "x = 'a'"
