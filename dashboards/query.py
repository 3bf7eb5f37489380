"""The ClickHouse datasource plugin's query model, as a typed foundation-sdk dataquery.

grafana-foundation-sdk (Grafana 11.6 models) has builders for Prometheus, Loki, … but none for
the official ClickHouse plugin (`grafana-clickhouse-datasource`), so this module defines the
plugin's SQL query the way the SDK defines the others: a `Dataquery` variant with `to_json` /
`from_json`, a builder, and a registration with the SDK's runtime so `Dashboard.from_json`
decodes ClickHouse targets into this class instead of an untyped bag.

The fields are the plugin's `CHSqlQuery` (src/types/sql.ts in grafana/clickhouse-datasource):
`editorType: "sql"`, `rawSql`, `format` (sqlds' numbers, src/data/utils.ts
`mapQueryTypeToGrafanaFormat`: 0 time series, 1 table) and `queryType` (src/types/queryBuilder.ts
`QueryType`: "timeseries", "table").
"""

from __future__ import annotations

import enum
import typing

from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import runtime as cogruntime
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import dashboard

PLUGIN_ID = "grafana-clickhouse-datasource"
DATASOURCE_VAR = "datasource"
"""Every ClickHouse panel reaches its datasource through this dashboard variable, never a uid."""


class Format(enum.IntEnum):
    """sqlds' frame formats as the plugin sends them (`format` in the query JSON)."""

    TIME_SERIES = 0
    TABLE = 1


QUERY_TYPE_OF = {Format.TIME_SERIES: "timeseries", Format.TABLE: "table"}


def clickhouse_ref(uid: str = "${" + DATASOURCE_VAR + "}") -> dashboard.DataSourceRef:
    """The datasource reference of ClickHouse panels and targets: the variable by default."""
    return dashboard.DataSourceRef(type_val=PLUGIN_ID, uid=uid)


class ClickHouseQuery(cogvariants.Dataquery):
    """One raw-SQL query of the ClickHouse plugin (`CHSqlQuery`)."""

    def __init__(
        self,
        ref_id: str = "A",
        raw_sql: str = "",
        format_val: Format = Format.TABLE,
        query_type: str | None = None,
        datasource: dashboard.DataSourceRef | None = None,
        editor_type: str = "sql",
        hide: bool | None = None,
    ) -> None:
        self.ref_id = ref_id
        self.raw_sql = raw_sql
        self.format_val = Format(format_val)
        self.query_type = query_type
        self.datasource = datasource
        self.editor_type = editor_type
        self.hide = hide

    def to_json(self) -> dict[str, object]:
        """The plugin's JSON (key names as the plugin's frontend writes them)."""
        payload: dict[str, object] = {
            "refId": self.ref_id,
            "editorType": self.editor_type,
            "rawSql": self.raw_sql,
            "format": int(self.format_val),
        }
        if self.query_type is not None:
            payload["queryType"] = self.query_type
        if self.datasource is not None:
            payload["datasource"] = self.datasource
        if self.hide is not None:
            payload["hide"] = self.hide
        return payload

    @classmethod
    def from_json(cls, data: dict[str, typing.Any]) -> typing.Self:
        """Decode the plugin's JSON (the inverse of `to_json`)."""
        ds = data.get("datasource")
        return cls(
            ref_id=data.get("refId", "A"),
            raw_sql=data.get("rawSql", ""),
            format_val=Format(data.get("format", Format.TABLE)),
            query_type=data.get("queryType"),
            datasource=dashboard.DataSourceRef.from_json(ds) if ds is not None else None,
            editor_type=data.get("editorType", "sql"),
            hide=data.get("hide"),
        )


class ClickHouseQueryBuilder(cogbuilder.Builder[ClickHouseQuery]):
    """Builder for `ClickHouseQuery`, in the style of the SDK's own dataquery builders."""

    def __init__(self, sql: str, fmt: Format = Format.TABLE, ref_id: str = "A") -> None:
        self._internal = ClickHouseQuery(
            ref_id=ref_id,
            raw_sql=sql,
            format_val=fmt,
            query_type=QUERY_TYPE_OF[fmt],
            datasource=clickhouse_ref(),
        )

    def build(self) -> ClickHouseQuery:
        """The query model."""
        return self._internal

    def datasource(self, ref: dashboard.DataSourceRef) -> typing.Self:
        """Reference another datasource (alert rules need a concrete uid)."""
        self._internal.datasource = ref
        return self


def register() -> None:
    """Teach the SDK's runtime (`Dashboard.from_json`) to decode ClickHouse targets; idempotent."""
    cogruntime.register_dataquery_variant(
        cogruntime.DataqueryConfig(identifier=PLUGIN_ID, from_json_hook=ClickHouseQuery.from_json)
    )
