"""Map pipeline records (alerts, control, breaker transitions, drift scores, heartbeats) to rows.

One `RecordTable` per record kind: its table, its columns in insert order, its id column and
the function that builds a row. These names are the single source of truth for the record
sink's inserts and its recovery queries; the DDL lives in `schemas/clickhouse/migrations`
(0004-0007, 0009; 0010 adds drift_scores.agent_id; 0012 log_epoch; 0017 heartbeats). Every
row ends with the Kafka source (`kafka_topic`, `kafka_partition`, `kafka_offset`,
`log_epoch`), which is what makes the sink exactly once; `ingested_at` is left to the column's
DEFAULT (the server's insert time).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from agentaudit.sink.rows import Source
from agentaudit_schemas.records import (
    Alert,
    BreakerTransition,
    ControlMessage,
    DriftScore,
    Heartbeat,
    Scope,
)

Record = Alert | ControlMessage | BreakerTransition | DriftScore | Heartbeat
RowBuilder = Callable[[Any, bytes, Source], tuple[Any, ...]]
_UINT64_END = 1 << 64

SOURCE_COLUMNS: tuple[str, ...] = ("kafka_topic", "kafka_partition", "kafka_offset", "log_epoch")
"""`log_epoch`: which log of the partition (migration 0012, as 0011 for events)."""

OFFSETS_TABLE = "agentaudit.record_sink_offsets"
OFFSETS_COLUMNS: tuple[str, ...] = ("kafka_topic", "kafka_partition", "kafka_offset", "log_epoch")
"""One row per partition per completed flush: the last offset fully stored (migrations 0009,
0012)."""


@dataclass(frozen=True)
class RecordTable:
    """Where one record kind lands and how its rows are built."""

    record: str  # the `record` field: alert, control, breaker_transition, drift_score, heartbeat
    table: str
    columns: tuple[str, ...]
    id_column: str
    build: RowBuilder
    uint64: tuple[str, ...] = ()
    """The record's UInt64 columns: the contract bounds those counts only below."""

    def row(self, model: Record, raw: bytes, source: Source) -> tuple[Any, ...]:
        """One row in `columns` order; `raw` is the record as published (the `record` column).
        Raises ValueError for a value no column of the table can hold."""
        row = self.build(model, raw, source)
        for name in self.uint64:
            # A count of 2**64 validates, and the store then refused the whole batch (every
            # record in it, again after each restart). Refused here, it is one dead letter.
            value = row[self.columns.index(name)]
            if not 0 <= value < _UINT64_END:
                raise ValueError(f"{name} = {value} does not fit UInt64")
        return row


def _source(source: Source) -> tuple[str, int, int, int]:
    return source.topic, source.partition, source.offset, source.log_epoch


def _scope(scope: Scope) -> tuple[str, str, str, str, str]:
    """tenant_id ('*' = global), scope_key, user_id, agent_id, tool; unset parts are ''."""
    return scope.tenant_id, scope.key, scope.user_id or "", scope.agent_id or "", scope.tool or ""


def details_json(details: dict[str, Any]) -> str:
    """The details map as JSON with sorted keys, so equal maps are equal strings."""
    return orjson.dumps(details, option=orjson.OPT_SORT_KEYS).decode()


def _alert(a: Alert, raw: bytes, source: Source) -> tuple[Any, ...]:
    tenant, key, user, agent, tool = _scope(a.scope)
    return (
        a.alert_id,
        a.kind,
        a.severity.value,
        tenant,
        key,
        user,
        agent,
        tool,
        a.window,
        a.window_start,
        a.window_end,
        a.observed,
        a.limit,
        a.baseline,
        a.score,
        a.message,
        a.runbook,
        a.fired_at,
        details_json(a.details),
        raw,
        *_source(source),
    )


def _control(c: ControlMessage, raw: bytes, source: Source) -> tuple[Any, ...]:
    tenant, key, user, agent, tool = _scope(c.scope)
    return (
        c.control_id,
        key,
        tenant,
        user,
        agent,
        tool,
        c.action.value,
        c.reason.value,
        c.message,
        c.runbook or "",
        c.issued_at,
        c.issued_by,
        c.until,
        raw,
        *_source(source),
    )


def _transition(t: BreakerTransition, raw: bytes, source: Source) -> tuple[Any, ...]:
    tenant, key, _user, agent, tool = _scope(t.scope)
    return (
        t.transition_id,
        key,
        tenant,
        agent,
        tool,
        t.from_state.value,
        t.to_state.value,
        t.signal,
        t.observed,
        t.threshold,
        t.at,
        raw,
        *_source(source),
    )


def _drift(d: DriftScore, raw: bytes, source: Source) -> tuple[Any, ...]:
    return (
        d.score_id,
        d.tenant_id,
        d.agent_id,
        d.subject,
        d.agent_version,
        d.model,
        d.test,
        d.statistic,
        d.p_value,
        d.reference_n,
        d.current_n,
        d.drifted,
        d.window_start,
        d.window_end,
        raw,
        *_source(source),
    )


def _heartbeat(h: Heartbeat, raw: bytes, source: Source) -> tuple[Any, ...]:
    return (h.heartbeat_id, h.source, h.at, h.seq, h.worker, h.interval_s, raw, *_source(source))


ALERTS = RecordTable(
    "alert",
    "agentaudit.alerts",
    (
        "alert_id",
        "kind",
        "severity",
        "tenant_id",
        "scope_key",
        "user_id",
        "agent_id",
        "tool",
        "window",
        "window_start",
        "window_end",
        "observed",
        "limit",
        "baseline",
        "score",
        "message",
        "runbook",
        "fired_at",
        "details",
        "record",
        *SOURCE_COLUMNS,
    ),
    "alert_id",
    _alert,
)
CONTROL = RecordTable(
    "control",
    "agentaudit.control",
    (
        "control_id",
        "scope_key",
        "tenant_id",
        "user_id",
        "agent_id",
        "tool",
        "action",
        "reason",
        "message",
        "runbook",
        "issued_at",
        "issued_by",
        "until",
        "record",
        *SOURCE_COLUMNS,
    ),
    "control_id",
    _control,
)
BREAKER_TRANSITIONS = RecordTable(
    "breaker_transition",
    "agentaudit.breaker_transitions",
    (
        "transition_id",
        "scope_key",
        "tenant_id",
        "agent_id",
        "tool",
        "from_state",
        "to_state",
        "signal",
        "observed",
        "threshold",
        "at",
        "record",
        *SOURCE_COLUMNS,
    ),
    "transition_id",
    _transition,
)
DRIFT_SCORES = RecordTable(
    "drift_score",
    "agentaudit.drift_scores",
    (
        "score_id",
        "tenant_id",
        "agent_id",
        "subject",
        "agent_version",
        "model",
        "test",
        "statistic",
        "p_value",
        "reference_n",
        "current_n",
        "drifted",
        "window_start",
        "window_end",
        "record",
        *SOURCE_COLUMNS,
    ),
    "score_id",
    _drift,
    ("reference_n", "current_n"),
)

HEARTBEATS = RecordTable(
    "heartbeat",
    "agentaudit.heartbeats",
    ("heartbeat_id", "source", "at", "seq", "worker", "interval_s", "record", *SOURCE_COLUMNS),
    "heartbeat_id",
    _heartbeat,
    ("seq",),
)
"""A job's liveness (control topic, key `heartbeat/<source>`): its own table, never a control
row (it is no scope) and never a dead letter (migration 0017)."""

RECORD_TABLES: dict[str, RecordTable] = {
    t.record: t for t in (ALERTS, CONTROL, BREAKER_TRANSITIONS, DRIFT_SCORES, HEARTBEATS)
}
"""Record kind → table, in the order a flush inserts them."""


def record_row(model: Record, raw: bytes, source: Source) -> tuple[RecordTable, tuple[Any, ...]]:
    """The table a validated record goes to and its row there."""
    table = RECORD_TABLES[model.record]
    return table, table.row(model, raw, source)
