"""Shared pieces of every dashboard: variables, the tenant filter, panels built from SQL.

Rules every dashboard keeps (tests/unit/dashboards check them on the rendered JSON):
a ClickHouse datasource variable (`$datasource`) that every ClickHouse panel and target goes
through (never a fixed uid), a tenant variable (`$tenant`, multi-value with All), a
description on every panel, a uid and a title.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from grafana_foundation_sdk.builders import (
    barchart,
    bargauge,
    piechart,
    prometheus,
    stat,
    table,
    timeseries,
)
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import plugins
from grafana_foundation_sdk.cog import runtime as cogruntime
from grafana_foundation_sdk.models import dashboard as model

from dashboards.query import (
    DATASOURCE_VAR,
    PLUGIN_ID,
    ClickHouseQueryBuilder,
    Format,
    clickhouse_ref,
)

TENANT_VAR = "tenant"
PROMETHEUS_VAR = "prometheus"
TENANT = "$__conditionalAll(tenant_id IN (${tenant}), $tenant)"
"""The tenant filter of every tenant-scoped query: `1=1` when All is selected (the plugin's
`$__conditionalAll`), else `tenant_id IN ('acme','globex')`."""

TAGS = ["agentaudit"]
PANEL_TYPES: dict[str, Any] = {
    "timeseries": timeseries.Panel,
    "table": table.Panel,
    "stat": stat.Panel,
    "piechart": piechart.Panel,
    "barchart": barchart.Panel,
    "bargauge": bargauge.Panel,
}


@dataclass(frozen=True)
class Sql:
    """A ClickHouse panel's query: raw SQL with the plugin's macros, and its frame format."""

    sql: str
    fmt: Format = Format.TABLE


def prometheus_ref() -> model.DataSourceRef:
    """Prometheus panels go through the `$prometheus` datasource variable."""
    return model.DataSourceRef(type_val="prometheus", uid="${" + PROMETHEUS_VAR + "}")


def _panel(
    kind: str, title: str, description: str, width: int, height: int, unit: str | None
) -> timeseries.Panel:
    if not description.strip():
        raise ValueError(f"panel {title!r} needs a description")
    panel = PANEL_TYPES[kind]().title(title).description(description).span(width).height(height)
    if unit is not None:
        panel = panel.unit(unit)
    return panel  # type: ignore[no-any-return]


def sql_panel(
    kind: str,
    title: str,
    description: str,
    query: Sql,
    *,
    unit: str | None = None,
    width: int = 12,
    height: int = 8,
) -> cogbuilder.Builder[model.Panel]:
    """A panel of type `kind` showing one ClickHouse query, through `$datasource`."""
    sql = query.sql.strip()
    return (
        _panel(kind, title, description, width, height, unit)
        .datasource(clickhouse_ref())
        .with_target(ClickHouseQueryBuilder(sql, query.fmt))
    )


def prometheus_panel(
    title: str,
    description: str,
    expr: str,
    legend: str,
    *,
    unit: str | None = None,
    width: int = 12,
    height: int = 8,
) -> cogbuilder.Builder[model.Panel]:
    """A time-series panel of one PromQL expression, through `$prometheus`."""
    target = prometheus.Dataquery().expr(expr).legend_format(legend).ref_id("A")
    target = target.datasource(prometheus_ref())
    return (
        _panel("timeseries", title, description, width, height, unit)
        .datasource(prometheus_ref())
        .with_target(target)
    )


def _variables(with_prometheus: bool) -> list[cogbuilder.Builder[model.VariableModel]]:
    out: list[cogbuilder.Builder[model.VariableModel]] = [
        dash.DatasourceVariable(DATASOURCE_VAR).label("ClickHouse").type(PLUGIN_ID)
    ]
    if with_prometheus:
        out.append(dash.DatasourceVariable(PROMETHEUS_VAR).label("Prometheus").type("prometheus"))
    tenants = {
        "editorType": "sql",
        "rawSql": "SELECT DISTINCT tenant_id FROM agentaudit.spend_hourly ORDER BY tenant_id",
        "format": int(Format.TABLE),
    }
    out.append(
        dash.QueryVariable(TENANT_VAR)
        .label("Tenant")
        .description("Tenants with spend in the store (agentaudit.spend_hourly); All = no filter.")
        .datasource(clickhouse_ref())
        .query(tenants)
        .multi(True)
        .include_all(True)
        .current(model.VariableOption(selected=True, text="All", value="$__all"))
        .refresh(model.VariableRefresh.ON_DASHBOARD_LOAD)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
    )
    return out


def board(
    uid: str,
    title: str,
    description: str,
    panels: list[cogbuilder.Builder[model.Panel]],
    *,
    with_prometheus: bool = False,
    time_from: str = "now-6h",
) -> model.Dashboard:
    """A dashboard with the shared variables and settings; panels are numbered in order."""
    builder = (
        dash.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(TAGS)
        .timezone("utc")
        .time(time_from, "now")
        .refresh("1m")
        .editable()
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .variables(_variables(with_prometheus))
    )
    for panel in panels:
        builder = builder.with_panel(panel)
    built = builder.build()
    for number, built_panel in enumerate(built.panels or [], start=1):
        built_panel.id_val = number  # stable ids: the committed JSON must not churn
        _with_custom_defaults(built_panel)
    return built


def _with_custom_defaults(panel: model.Panel | model.RowPanel) -> None:
    """Spell out the panel type's custom field-config defaults, as the SDK's decoder fills
    them in (`custom: {}` for a time series, `align: auto` for a table, …): so the rendered
    JSON is a fixed point of `Dashboard.from_json` → JSON (the round-trip test)."""
    field_config = getattr(panel, "field_config", None)
    if field_config is None or field_config.defaults.custom is not None:
        return
    plugins.register_default_plugins()
    config = cogruntime.panelcfg_config(getattr(panel, "type_val", ""))
    if config is not None and config.field_config_from_json_hook is not None:
        field_config.defaults.custom = config.field_config_from_json_hook({})
