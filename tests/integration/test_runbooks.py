"""No alert without a runbook, no runbook without an alert, and every runbook query runs.

(a) The alert kinds in `stream_jobs.alert_kinds.ALERT_KINDS` are exactly the kinds the jobs'
    code contains and exactly the runbooks in `runbooks/` (plus the few runbooks that
    records link to without an alert, `NON_ALERT_RUNBOOKS`); every `runbooks/<X>.md` the
    code names exists.
(b) Every runbook has `# <Kind>`, then `## Meaning`, `## Impact`, `## Diagnosis`,
    `## Mitigation` in that order.
(c) Every ```sql block of every runbook runs as written, and finds rows, against a store
    with all migrations applied and three hours of a fleet's events, a dead letter and
    records of every kind, inserted through the sinks' own row builders.
"""

from __future__ import annotations

import ast
import random
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from agentaudit.settings import Settings
from agentaudit.sink.pipeline_records.routing import RecordProcessor
from agentaudit.sink.pipeline_records.rows import RECORD_TABLES
from agentaudit.sink.processor import SinkProcessor
from agentaudit.sink.rows import DEAD_LETTER_COLUMNS, INGEST_COLUMNS, INGEST_TABLE, Source
from agentaudit.sink.signing import CHECKPOINT_COLUMNS, CHECKPOINT_TABLE
from agentaudit.store import ClickHouseStore, open_store
from agentaudit.store.migrations import discover, migrate
from agentaudit_schemas.pricing import load_pricing
from agentaudit_schemas.records import (
    Alert,
    BreakerState,
    BreakerTransition,
    ControlAction,
    ControlMessage,
    ControlReason,
    DriftScore,
    Scope,
    Severity,
    record_id,
)
from stream_jobs.alert_kinds import ALERT_KINDS, NON_ALERT_RUNBOOKS, PIPELINE_ALERTS
from tests.unit.schemas.examples import PAYLOADS

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RUNBOOKS = ROOT / "runbooks"
SECTIONS = ["## Meaning", "## Impact", "## Diagnosis", "## Mitigation"]
KIND_SHAPE = re.compile(r"^(?:[A-Z][a-z0-9]+){2,}$")  # SpendAnomaly, BreakerOpen, …
RUNBOOK_LINK = re.compile(r"^runbooks/([A-Z][A-Za-z0-9]+)\.md$")
SQL_BLOCK = re.compile(r"^```sql\n(.*?)^```", re.MULTILINE | re.DOTALL)
# Kind-shaped module constants in stream_jobs/ that are not alert kinds (none so far).
NOT_KINDS: set[str] = set()


def runbook_names() -> set[str]:
    return {p.stem for p in RUNBOOKS.glob("*.md")}


def _constants(tree: ast.AST) -> Iterator[str]:
    """String constants of a module, except the names listed in `__all__`."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            skip |= {id(n) for n in ast.walk(node.value)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            yield node.value


def _kind_literals(tree: ast.Module) -> Iterator[str]:
    """Where the jobs spell kinds: `kind="X"` arguments, module constants whose value is
    kind-shaped (`EXHAUSTED = "BudgetExhausted"`), and every kind-shaped string inside a
    module-level assignment to a name containing KIND (`KIND_OF = {...}`, `DRIFT_KINDS = (...)`)."""
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.keyword)
            and node.arg == "kind"
            and isinstance(node.value, ast.Constant)
        ):
            yield str(node.value.value)
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign):
            targets, value = stmt.targets, stmt.value
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            targets, value = [stmt.target], stmt.value
        else:
            continue
        names = [t.id for t in targets if isinstance(t, ast.Name)]
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            yield value.value
        elif any("KIND" in n for n in names):
            yield from (
                n.value
                for n in ast.walk(value)
                if isinstance(n, ast.Constant) and isinstance(n.value, str)
            )


def _sources(*packages: str) -> Iterator[tuple[Path, ast.Module]]:
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield path, ast.parse(path.read_text(), str(path))


# -- (a) kinds ↔ runbooks ----------------------------------------------------------------------


def test_every_kind_the_jobs_contain_is_registered() -> None:
    """The kinds spelled in stream_jobs/ (see `_kind_literals`) are exactly the registry, and the
    jobs' exported kind constants are in it: a new kind must be registered, a dropped one
    removed."""
    from stream_jobs.anomaly import ANOMALY_KINDS
    from stream_jobs.breaker.messages import ALERT_KIND
    from stream_jobs.drift import DRIFT_KINDS
    from stream_jobs.spend.messages import EXHAUSTED, THRESHOLD

    literals = {
        value
        for path, tree in _sources("stream_jobs")
        if path.name != "alert_kinds.py"
        for value in _kind_literals(tree)
        if KIND_SHAPE.match(value)
    } - NOT_KINDS
    exported = {*ANOMALY_KINDS, *DRIFT_KINDS, ALERT_KIND, THRESHOLD, EXHAUSTED}
    assert literals == set(ALERT_KINDS), "stream_jobs/alert_kinds.py is out of date"
    assert exported <= set(ALERT_KINDS)
    for kind, meaning in ALERT_KINDS.items():
        assert Alert.runbook_for(kind) == f"runbooks/{kind}.md" and meaning.strip(), kind


def test_every_kind_has_a_runbook_and_every_runbook_a_kind() -> None:
    """Pipeline alerts (Grafana rules, `PIPELINE_ALERTS`) count as kinds here: each has its
    runbook, and tests/unit/dashboards checks that each has its rule."""
    kinds, others = set(ALERT_KINDS) | set(PIPELINE_ALERTS), set(NON_ALERT_RUNBOOKS)
    assert not kinds & others and not set(ALERT_KINDS) & set(PIPELINE_ALERTS)
    names = runbook_names()
    assert sorted(kinds - names) == [], "alert kinds without runbooks/<Kind>.md"
    assert sorted(names - kinds - others) == [], "runbooks no alert fires (register them)"
    assert sorted(others - names) == [], "NON_ALERT_RUNBOOKS entries without a file"


def test_every_runbook_the_code_links_exists() -> None:
    linked = {
        (match.group(1), path.relative_to(ROOT).as_posix())
        for path, tree in _sources("agentaudit", "producers", "stream_jobs", "schemas")
        for value in _constants(tree)
        if (match := RUNBOOK_LINK.match(value))
    }
    assert linked, "expected at least the manual-block runbook link"
    missing = sorted(
        f"runbooks/{name}.md (named in {where})"
        for name, where in linked
        if name not in runbook_names()
    )
    assert missing == []


# -- (b) structure -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(runbook_names()))
def test_runbook_has_the_sections_in_order(name: str) -> None:
    lines = (RUNBOOKS / f"{name}.md").read_text().splitlines()
    assert lines[0] == f"# {name}", "the title must be the kind"
    headings = [line.rstrip() for line in lines if line.startswith("## ")]
    assert [h for h in headings if h in SECTIONS] == SECTIONS, headings
    assert SQL_BLOCK.search("\n".join(lines)), "Diagnosis needs at least one ```sql query"


# -- (c) every query runs ----------------------------------------------------------------------


def _queries() -> list[tuple[str, int, str]]:
    found = []
    for path in sorted(RUNBOOKS.glob("*.md")):
        for i, match in enumerate(SQL_BLOCK.finditer(path.read_text())):
            found.append((path.stem, i + 1, match.group(1).strip().rstrip(";")))
    return found


QUERIES = _queries()


def _event(rng: random.Random, type_: str, at: datetime, **envelope: Any) -> dict[str, Any]:
    payload = orjson.loads(orjson.dumps(PAYLOADS[type_]))
    return {
        "event_id": _uuid7(rng, at),
        "type": type_,
        "occurred_at": at.isoformat(),
        "sdk": {"name": "tests", "version": "0"},
        "tenant_id": "acme",
        "agent_id": "support-bot",
        "agent_version": "1.0.0",
        "trace_id": f"{rng.getrandbits(128):032x}",
        "span_id": f"{rng.getrandbits(64):016x}",
        "payload": payload,
        **envelope,
    }


def _uuid7(rng: random.Random, at: datetime) -> str:
    """A valid UUIDv7 from a seeded generator (deterministic test data)."""
    value = (int(at.timestamp() * 1000) << 80) | (0x7 << 76) | (rng.getrandbits(12) << 64)
    value |= (0b10 << 62) | rng.getrandbits(62)
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _fleet(now: datetime) -> list[dict[str, Any]]:
    """Three hours of acme traffic (plus a few days of evals) touching every event type."""
    rng = random.Random(7)
    docs: list[dict[str, Any]] = []
    for step in range(36):  # one burst per 5 minutes, the first a second ago (inside "today")
        at = now - timedelta(minutes=5 * step, seconds=1)
        agent = ("support-bot", "billing-bot")[step % 2]
        run, user = f"run-{step}", f"user-{step % 3}"
        common = {"agent_id": agent, "run_id": run, "user_id": user, "session_id": f"s-{step % 4}"}
        docs.append(_event(rng, "run_started", at, **common))
        for call in range(3):
            doc = _event(rng, "llm_call", at, **common)
            doc["payload"].update(
                request_model=("gpt-5-mini", "gpt-5", "unknown-model")[call],
                # Not in the newest burst: its unknown-model call must stay unpriced, the one
                # "today" always holds (`_fixture_now`).
                response_model=("gpt-5-mini-2026-08-07" if step % 4 == 1 else None),
                status="error" if call == 2 and step % 3 == 0 else "ok",
                ttft_ms=120.0 + call,
                usage={
                    "input_tokens": 900 + 40 * step,
                    "output_tokens": 150,
                    "cached_input_tokens": 300,
                },
            )
            if doc["payload"]["status"] == "error":
                doc["payload"]["error_type"] = "rate_limited"
            docs.append(doc)
        for _ in range(3):  # the same tool, same arguments, three times: a loop
            doc = _event(rng, "tool_call", at, **common)
            doc["payload"]["tool"] = "crm_lookup"
            docs.append(doc)
        decision = "DENY" if step % 3 == 0 else "ALLOW"
        docs.append(_event(rng, "policy_decision", at, **common))
        docs[-1]["payload"].update(decision=decision, reason="limit")
        approval = f"apr-{step}"
        docs.append(_event(rng, "approval_requested", at, **common))
        docs[-1]["payload"]["approval_id"] = approval
        if step % 4:  # every fourth request is still waiting
            docs.append(_event(rng, "approval_decided", at, **common))
            docs[-1]["payload"].update(approval_id=approval, latency_ms=30_000.0 + 1000 * step)
        docs.append(_event(rng, "guardrail_triggered", at, **common))
        docs.append(_event(rng, "error", at, **common))
        stop = ("completed", "budget_exhausted", "cancelled", "timeout", "breaker_open")[step % 5]
        docs.append(_event(rng, "run_finished", at, **common))
        docs[-1]["payload"]["stop_reason"] = stop
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    days = [
        (now - timedelta(days=3), True),
        (now - timedelta(days=2), True),
        (max(now - timedelta(seconds=10), today), False),
    ]
    for at, passed in days:  # case-0 passed before today and fails today
        for case in range(5):
            docs.append(_event(rng, "eval_result", at))
            docs[-1]["payload"].update(
                gold_set_id="support-gold",
                case_id=f"case-{case}",
                passed=passed or case > 0,
                score=0.9 if passed else 0.1,
            )
    return docs


def _records(now: datetime) -> list[Alert | ControlMessage | BreakerTransition | DriftScore]:
    scope = Scope(tenant_id="acme", agent_id="support-bot")
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    out: list[Alert | ControlMessage | BreakerTransition | DriftScore] = []
    for i, kind in enumerate(sorted(ALERT_KINDS)):
        out.append(
            Alert(
                alert_id=record_id(kind, i),
                kind=kind,
                severity=Severity.WARNING,
                scope=scope,
                window=f"day:{day:%Y-%m-%d}",
                window_start=day,
                window_end=day + timedelta(days=1),
                observed=42.0,
                limit=50.0 if kind.startswith("Budget") else None,
                baseline=10.0,
                score=7.5,
                message=f"{kind} fired",
                runbook=Alert.runbook_for(kind),
                fired_at=now - timedelta(minutes=i),
                details={"detector": "mad"},
            )
        )
    for i, (tenant, action) in enumerate(
        [("acme", ControlAction.BLOCK), ("acme", ControlAction.UNBLOCK), ("*", ControlAction.BLOCK)]
    ):
        out.append(
            ControlMessage(
                control_id=record_id("control", i),
                scope=Scope(tenant_id=tenant, agent_id="support-bot"),
                action=action,
                reason=ControlReason.MANUAL,
                message="by hand",
                runbook="runbooks/ManualBlock.md",
                issued_at=now - timedelta(minutes=30 - i),
                issued_by="cli:oncall",
                until=now + timedelta(hours=1) if action is ControlAction.BLOCK else None,
            )
        )
    for i, (a, b) in enumerate(
        [(BreakerState.CLOSED, BreakerState.OPEN), (BreakerState.OPEN, BreakerState.HALF_OPEN)]
    ):
        out.append(
            BreakerTransition(
                transition_id=record_id("transition", i),
                scope=Scope(tenant_id="acme", agent_id="support-bot", tool="crm_lookup"),
                from_state=a,
                to_state=b,
                signal="error_rate",
                observed=0.6,
                threshold=0.5,
                at=now - timedelta(minutes=20 - i),
            )
        )
    for i, subject in enumerate(
        ["goldset:support-gold/faithfulness", "behaviour:support-bot/tool_mix"]
    ):
        out.append(
            DriftScore(
                score_id=record_id("drift", i),
                tenant_id="acme",
                subject=subject,
                agent_version="1.0.0",
                model="gpt-5-mini",
                test="ks",
                statistic=0.4,
                p_value=0.001,
                reference_n=500,
                current_n=60,
                drifted=True,
                window_start=now - timedelta(hours=1),
                window_end=now,
            )
        )
    return out


def _insert(
    store: ClickHouseStore, table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]
) -> None:
    store.insert(table, [list(c) for c in zip(*rows, strict=True)], columns)


def _fixture_now(real: datetime) -> datetime:
    """The fixture's "now": the real one, but never within 2 s after midnight nor 2 min before
    it (moved just past midnight, ahead by at most 2 min: within the sink's clock skew), so
    queries over "today" find the newest burst whenever, within the module, they run."""
    midnight = real.replace(hour=0, minute=0, second=0, microsecond=0)
    if real - midnight < timedelta(seconds=2):
        return midnight + timedelta(seconds=2)
    if midnight + timedelta(days=1) - real < timedelta(minutes=2):
        return midnight + timedelta(days=1, seconds=2)
    return real


@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseStore]:
    """A migrated store holding a fleet's events, a dead letter and records of every kind."""
    now = _fixture_now(datetime.now(UTC))
    with open_store(Settings(data_dir=tmp_path_factory.mktemp("runbooks"))) as store:
        assert len(migrate(store)) == len(discover())
        sink = SinkProcessor(load_pricing(), dedup_capacity=10_000)
        stamp = int(now.timestamp() * 1000)  # the record timestamp: not before the events
        for offset, doc in enumerate(_fleet(now)):
            sink.add(Source("events", 0, offset, stamp, b"acme"), orjson.dumps(doc))
        sink.add(
            Source("events", 0, 100_000, 1_700_000_000_000, b"acme"),
            b'{"tenant_id": "acme", "oops"',
        )
        batch = sink.take()
        assert sink.counters.dead_lettered == 1 and sink.counters.accepted == len(batch.events)
        _insert(store, INGEST_TABLE, INGEST_COLUMNS, batch.events)
        _insert(store, "agentaudit.dead_letters", DEAD_LETTER_COLUMNS, batch.dead_letters)
        records = RecordProcessor(dedup_capacity=1000, control_topic="control")
        for offset, record in enumerate(_records(now)):
            topic = "control" if isinstance(record, ControlMessage) else "alerts"
            records.add(
                Source(topic, 0, offset, 1_700_000_000_000, b"acme"),
                record.model_dump_json().encode(),
            )
        taken = records.take()
        assert records.counters.dead_lettered == 0
        for table in RECORD_TABLES.values():
            if rows := taken.rows.get(table.table):  # heartbeats come below, not as records
                _insert(store, table.table, table.columns, rows)
        _insert_pipeline_rows(store, now)
        yield store


def _insert_pipeline_rows(store: ClickHouseStore, now: datetime) -> None:
    """What the pipeline runbooks query besides events: a signed checkpoint per chain and
    the stream jobs' heartbeats (written straight, as the sink and record sink would)."""
    chains = store.query(
        "SELECT tenant_id, kafka_partition, count() FROM agentaudit.events GROUP BY ALL"
    ).result_rows
    _insert(
        store,
        CHECKPOINT_TABLE,
        CHECKPOINT_COLUMNS,
        [
            (
                "tests",
                tenant,
                partition,
                rows - 1,
                "0" * 64,
                now - timedelta(minutes=10),
                "0" * 8,
                False,
                "",
                [],
            )
            for tenant, partition, rows in chains
        ],
    )
    beat_columns = (
        "heartbeat_id",
        "source",
        "at",
        "seq",
        "worker",
        "interval_s",
        "record",
        "kafka_topic",
        "kafka_partition",
        "kafka_offset",
    )
    _insert(
        store,
        "agentaudit.heartbeats",
        beat_columns,
        [
            (
                f"hb-{seq}",
                "stream_jobs",
                now - timedelta(seconds=90 - 5 * seq),
                seq,
                "w1",
                5.0,
                "{}",
                "control",
                0,
                seq,
            )
            for seq in range(3)
        ],
    )


@pytest.mark.parametrize(("runbook", "n", "sql"), QUERIES, ids=[f"{r}-{n}" for r, n, _ in QUERIES])
def test_runbook_query_runs_as_written(
    populated: ClickHouseStore, runbook: str, n: int, sql: str
) -> None:
    """Runs, and returns rows: a query that finds nothing on the fixture was not exercised
    (a JSON path or a type error can hide behind an empty result). If a new query needs data
    the fixture lacks, extend `_fleet` / `_records`."""
    result = populated.query(sql)
    assert result.result_rows, f"runbooks/{runbook}.md query {n} found no rows in the fixture"


def test_the_fixture_keeps_its_newest_burst_inside_today_near_midnight() -> None:
    day = datetime(2031, 5, 6, tzinfo=UTC)
    assert _fixture_now(day + timedelta(seconds=0.5)) == day + timedelta(seconds=2)
    assert _fixture_now(day + timedelta(hours=23, minutes=59)) == day + timedelta(days=1, seconds=2)
    noon = day + timedelta(hours=12)
    assert _fixture_now(noon) == noon
