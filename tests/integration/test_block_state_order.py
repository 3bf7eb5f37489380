"""The kill switch's state on the dashboard and in the runbooks is what the agents obey.

The agents take the latest control message per scope in the topic's order. The "blocks" panel
and the runbooks' state queries took the latest by `issued_at`, each issuer's own clock: with
a jobs host 5 s ahead, a BLOCK it wrote and the operator's UNBLOCK right after it showed the
scope blocked while the agents ran (restore-blocks had the same fault, 192c792). Real chDB,
rows built by the record sink.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agentaudit.settings import Settings
from agentaudit.sink.pipeline_records.routing import RecordProcessor
from agentaudit.sink.pipeline_records.rows import RECORD_TABLES
from agentaudit.sink.rows import Source
from agentaudit.store import ClickHouseStore, open_store
from agentaudit.store.migrations import migrate
from agentaudit_schemas.records import (
    ControlAction,
    ControlMessage,
    ControlReason,
    Scope,
    record_id,
)
from dashboards import breakers
from dashboards.macros import QueryContext, expand

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
T = datetime(2026, 11, 21, 12, tzinfo=UTC)


def _message(action: ControlAction, issued_at: datetime, by: str) -> ControlMessage:
    return ControlMessage(
        control_id=record_id("control", action, by),
        scope=Scope(tenant_id="acme"),
        action=action,
        reason=ControlReason.MANUAL,
        message=f"{action} by {by}",
        issued_at=issued_at,
        issued_by=by,
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ClickHouseStore]:
    with open_store(Settings(data_dir=tmp_path), own=True) as store:
        migrate(store)
        sink = RecordProcessor(dedup_capacity=100, control_topic="control")
        # the jobs' host runs 5 s ahead: its BLOCK is stamped after the UNBLOCK that follows it
        for offset, message in enumerate(
            (
                _message(ControlAction.BLOCK, T + timedelta(seconds=5), "jobs"),
                _message(ControlAction.UNBLOCK, T + timedelta(seconds=1), "operator"),
            )
        ):
            sink.add(
                Source("control", 0, offset, 0, b"tenant=acme"), message.model_dump_json().encode()
            )
        rows = sink.take().rows
        for spec in RECORD_TABLES.values():
            if got := rows.get(spec.table):
                store.insert(spec.table, [list(c) for c in zip(*got, strict=True)], spec.columns)
        yield store


def test_the_blocks_panel_shows_the_latest_message_as_the_agents_read_it(
    store: ClickHouseStore,
) -> None:
    day = timedelta(days=1)
    ctx = QueryContext(T - day, T + day, timedelta(minutes=5), {"tenant": ["acme"]})
    rows = store.query(expand(breakers._BLOCKS, ctx)).named_results()  # noqa: SLF001
    assert [(r["scope_key"], r["last_action"]) for r in rows] == [("tenant=acme", "unblock")]


@pytest.mark.parametrize("runbook", ["BudgetExhausted", "ManualBlock"])
def test_the_runbooks_state_query_shows_the_latest_message_as_the_agents_read_it(
    store: ClickHouseStore, runbook: str
) -> None:
    text = (ROOT / "runbooks" / f"{runbook}.md").read_text()
    (sql,) = [s for s in re.findall(r"^```sql\n(.*?)^```", text, re.M | re.S) if "argMax(" in s]
    rows = store.query(sql).named_results()
    actions = [r.get("action") for r in rows]
    assert actions == ["unblock"], rows
