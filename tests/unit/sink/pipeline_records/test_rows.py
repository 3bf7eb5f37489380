"""Record → row mapping: one row per record, in column order, the scope flattened."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest

from agentaudit.sink.pipeline_records.rows import (
    ALERTS,
    BREAKER_TRANSITIONS,
    CONTROL,
    DRIFT_SCORES,
    RECORD_TABLES,
    SOURCE_COLUMNS,
    RecordTable,
    record_row,
)
from agentaudit.sink.rows import Source
from agentaudit.store.migrations import default_directory, discover, statements
from agentaudit_schemas.records import Scope
from tests.unit.sink.pipeline_records.factories import AT, alert, control, drift, transition, wire

SRC = Source("alerts", 2, 17, 1_700_000_000_000, b"acme")


def test_alert_row_flattens_scope_and_keeps_the_record_whole() -> None:
    a = alert(3, scope=Scope(tenant_id="*"), limit=None, baseline=1.5, score=7.25)
    table, row = record_row(a, wire(a), SRC)
    assert table is ALERTS
    got = dict(zip(ALERTS.columns, row, strict=True))
    assert got["alert_id"] == a.alert_id and got["kind"] == "BudgetThresholdCrossed"
    assert (got["tenant_id"], got["scope_key"], got["user_id"], got["agent_id"], got["tool"]) == (
        "*",
        "tenant=*",
        "",
        "",
        "",
    )
    assert (got["observed"], got["limit"], got["baseline"], got["score"]) == (44.5, None, 1.5, 7.25)
    assert (
        got["severity"] == "warning" and got["fired_at"] == AT and got["window"] == "day:2026-11-21"
    )
    assert orjson.loads(got["details"]) == {"budget": "daily", "threshold": 0.8}
    assert got["record"] == wire(a)
    assert (got["kafka_topic"], got["kafka_partition"], got["kafka_offset"]) == ("alerts", 2, 17)


def test_details_json_is_key_sorted_so_equal_maps_give_equal_strings() -> None:
    a = alert(details={"z": 1, "a": True, "m": "x"})
    b = alert(details={"m": "x", "a": True, "z": 1})
    col = ALERTS.columns.index("details")
    assert (
        record_row(a, b"", SRC)[1][col]
        == record_row(b, b"", SRC)[1][col]
        == '{"a":true,"m":"x","z":1}'
    )


def test_control_row_defaults_runbook_and_keeps_until() -> None:
    c = control(until=AT).model_copy(update={"runbook": None})
    table, row = record_row(c, b"{}", SRC)
    got = dict(zip(CONTROL.columns, row, strict=True))
    assert table is CONTROL
    assert (got["action"], got["reason"], got["runbook"], got["until"]) == (
        "block",
        "budget_exhausted",
        "",
        AT,
    )
    assert (got["tenant_id"], got["agent_id"], got["user_id"], got["scope_key"]) == (
        "acme",
        "support-bot",
        "",
        "tenant=acme/agent=support-bot",
    )


def test_transition_and_drift_rows() -> None:
    _, row = record_row(transition(), b"{}", SRC)
    got = dict(zip(BREAKER_TRANSITIONS.columns, row, strict=True))
    assert (got["from_state"], got["to_state"], got["tool"], got["signal"]) == (
        "closed",
        "open",
        "crm_lookup",
        "error_rate",
    )
    _, row = record_row(drift(p_value=None), b"{}", SRC)
    got = dict(zip(DRIFT_SCORES.columns, row, strict=True))
    assert (got["test"], got["p_value"], got["drifted"], got["current_n"]) == (
        "ks",
        None,
        True,
        180,
    )
    assert (got["tenant_id"], got["agent_id"], got["subject"]) == (
        "acme",
        "support-bot",
        "goldset:faq/accuracy",
    )
    # Not per agent: the column holds '' (its DEFAULT), never NULL.
    _, row = record_row(drift(agent_id=""), b"{}", SRC)
    assert dict(zip(DRIFT_SCORES.columns, row, strict=True))["agent_id"] == ""


ADD_COLUMN = re.compile(r"^\s*ADD COLUMN (?:IF NOT EXISTS )?`?(\w+)`? (.+?)(?: AFTER \w+)?$")
DROP_COLUMN = re.compile(r"^\s*DROP COLUMN (?:IF EXISTS )?`?(\w+)`?$")


def declared_columns(name: str) -> dict[str, str]:
    """Column → type (and DEFAULT) of `agentaudit.<name>` after every up migration: its
    CREATE TABLE, then the ALTER TABLE … ADD / DROP COLUMN of later migrations in order."""
    declared: dict[str, str] = {}
    for m in discover(Path(str(default_directory()))):
        for s in statements(m.up):
            if s.startswith(f"CREATE TABLE IF NOT EXISTS agentaudit.{name}\n"):
                body = s.split("\n(\n", 1)[1].split("\n)\n", 1)[0]  # the column list
                for line in body.splitlines():
                    parts = line.strip().rstrip(",").split(None, 1)
                    if len(parts) == 2 and parts[0] != "INDEX":
                        declared[parts[0].strip("`")] = parts[1]
            elif s.startswith(f"ALTER TABLE agentaudit.{name}\n"):
                for clause in s.split("\n", 1)[1].split(",\n"):
                    if added := ADD_COLUMN.match(clause):
                        declared[added[1]] = added[2]
                    elif dropped := DROP_COLUMN.match(clause):
                        declared.pop(dropped[1], None)
                    else:
                        raise AssertionError(f"{m.name}: clause this test cannot read: {clause}")
    assert declared, f"no CREATE TABLE for agentaudit.{name} in the migrations"
    return declared


def test_drift_scores_agent_column_is_added_with_an_empty_default() -> None:
    # Rows stored before migration 0010 read as '' (not per agent), like the model's default.
    assert declared_columns("drift_scores")["agent_id"] == "LowCardinality(String) DEFAULT ''"


@pytest.mark.parametrize("table", list(RECORD_TABLES.values()), ids=lambda t: t.record)
def test_columns_are_the_table_columns_in_the_migrations(table: RecordTable) -> None:
    """Every inserted column is in the DDL; every DDL column without a DEFAULT is inserted."""
    declared = declared_columns(table.table.split(".")[1])
    inserted = set(table.columns)
    assert inserted <= set(declared)
    assert set(declared) - inserted == {"ingested_at"} and "DEFAULT" in declared["ingested_at"]
    assert table.columns[-len(SOURCE_COLUMNS) :] == SOURCE_COLUMNS
