"""Engine errors reach the caller on every store path; backfills spanning many months are stored.

chDB's streaming insert (`send_insert`, which the embedded store server uses for
`INSERT … FORMAT Native`) reports success for an insert that fails while writing: a
materialized view that throws, a constraint, more than `max_partitions_per_insert_block`
partitions. These tests use the real engine, the real HTTP path and the real sink.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from clickhouse_connect.driver.exceptions import DatabaseError

from agentaudit.broker import ensure_topics, free_port
from agentaudit.settings import Settings
from agentaudit.sink.rows import INGEST_TABLE
from agentaudit.sink.worker import SinkWorker
from agentaudit.store import open_store
from agentaudit.store.chdb_engine import ChdbEngine, EngineError
from agentaudit.store.migrations import migrate
from tests.factories import event_dict, wire
from tests.integration.helpers import assert_chains_valid, produce_raw, scalar, sink_until

pytestmark = pytest.mark.integration

THROW_IF_VALUE_IS_NON_ZERO = 395
VIOLATED_CONSTRAINT = 469


def _month(i: int) -> datetime:
    """The 15th of the i-th month after January 2001 (inside the contract's 2000..2199)."""
    return datetime(2001 + i // 12, 1 + i % 12, 15, 12, 0, tzinfo=UTC)


INGEST_COLUMNS = (
    "payload",
    "cost_usd",
    "priced",
    "pricing_version",
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
    "chain_seq",
    "prev_hash",
    "row_hash",
)


def _ingest_columns(months: int) -> list[list[object]]:
    """`events_ingest` rows, one per month over `months` months, in `INGEST_COLUMNS` order."""
    rows = []
    for i in range(months):
        doc = event_dict(tenant=f"tenant-{i % 4}")
        doc["occurred_at"] = _month(i).isoformat()
        rows.append(
            (json.dumps(doc, sort_keys=True), 0, True, "v", "t", 0, i, i + 1, "0" * 64, "1" * 64)
        )
    return [list(col) for col in zip(*rows, strict=True)]


def _throwing_view_sql() -> list[str]:
    return [
        "CREATE DATABASE IF NOT EXISTS errs",
        "CREATE TABLE errs.target (x UInt32) ENGINE = MergeTree ORDER BY x",
        "CREATE TABLE errs.source (x UInt32) ENGINE = Null",
        (
            "CREATE MATERIALIZED VIEW errs.mv TO errs.target AS "
            "SELECT throwIf(x = 3, 'refused by the view') + x AS x FROM errs.source"
        ),
    ]


def test_engine_insert_raises_what_a_materialized_view_throws(tmp_path: Path) -> None:
    """The chDB session itself (what the owner serves): the view's error, nothing stored."""
    engine = ChdbEngine(tmp_path / "chdb")
    try:
        for sql in _throwing_view_sql():
            engine.query(sql.encode(), "TabSeparated", {}, "default", {})
        native = bytes(
            engine.query(
                b"SELECT toUInt32(number + 1) AS x FROM numbers(5)", "Native", {}, "default", {}
            ).body
        )
        with pytest.raises(EngineError) as raised:
            engine.insert("INSERT INTO errs.source (x)", "Native", [native], "default", {})
        assert raised.value.code == THROW_IF_VALUE_IS_NON_ZERO
        assert "refused by the view" in raised.value.message
        count = engine.query(b"SELECT count() FROM errs.target", "TabSeparated", {}, "default", {})
        assert bytes(count.body) == b"0\n"
        # The session is usable afterwards, and a good insert is not reported as failed.
        engine.insert("INSERT INTO errs.target (x)", "Native", [native], "default", {})
        count = engine.query(b"SELECT count() FROM errs.target", "TabSeparated", {}, "default", {})
        assert bytes(count.body) == b"5\n"
    finally:
        engine.close()


def test_http_insert_raises_what_a_materialized_view_throws(tmp_path: Path) -> None:
    """clickhouse-connect → the owner's HTTP endpoint → chDB: the same error, by code."""
    settings = Settings(data_dir=tmp_path / "data")
    with open_store(settings) as owner:
        for sql in _throwing_view_sql():
            owner.command(sql)
        with open_store(settings, attach=True) as other:  # another process's view of the owner
            for store in (owner, other):
                with pytest.raises(DatabaseError) as raised:
                    store.insert("errs.source", [[1, 2, 3, 4]], ["x"])
                assert getattr(raised.value, "code", None) == THROW_IF_VALUE_IS_NON_ZERO
                assert "refused by the view" in str(raised.value)
            assert scalar(owner, "SELECT count() FROM errs.target") == 0
            # `command` (INSERT … SELECT) took the query path all along; it still raises.
            with pytest.raises(DatabaseError):
                other.command("INSERT INTO errs.source SELECT toUInt32(number) FROM numbers(5)")
            assert scalar(owner, "SELECT count() FROM errs.target") == 0


def test_one_insert_spanning_150_months_is_stored_with_its_rollups(tmp_path: Path) -> None:
    """`events` (and `spend_hourly`) are partitioned by month: 150 months in one insert."""
    settings = Settings(data_dir=tmp_path / "data")
    with open_store(settings) as store:
        migrate(store)
        store.insert(INGEST_TABLE, _ingest_columns(150), INGEST_COLUMNS)
        assert scalar(store, "SELECT count() FROM agentaudit.events") == 150
        assert (
            scalar(store, "SELECT uniqExact(toYYYYMM(occurred_at)) FROM agentaudit.events") == 150
        )
        assert scalar(store, "SELECT uniqExact(toYYYYMM(hour)) FROM agentaudit.spend_hourly") == 150


async def test_sink_stores_a_batch_spanning_160_months_from_several_tenants(
    settings: Settings,
) -> None:
    await ensure_topics(settings)
    docs = []
    for i in range(160):
        doc = event_dict(tenant=f"backfill-{i % 3}")
        doc["occurred_at"] = _month(i).isoformat()
        docs.append(doc)
    docs += [event_dict(tenant="live") for _ in range(10)]  # a tenant sharing the batch
    await produce_raw(settings, [(d["tenant_id"].encode(), wire(d)) for d in docs])
    settings = settings.model_copy(update={"sink_flush_interval_ms": 2000})  # one batch
    with open_store(settings, own=True) as store:
        migrate(store)
        worker = await sink_until(
            settings, store, lambda w: w.processor.counters.accepted >= len(docs)
        )
        assert worker.flushes == 1, "the events were meant to arrive as one batch"
        assert scalar(store, "SELECT count() FROM agentaudit.events") == len(docs)
        assert (
            scalar(store, "SELECT uniqExact(toYYYYMM(occurred_at)) FROM agentaudit.events") == 161
        )
        assert assert_chains_valid(store) == len(docs)


async def _committed(settings: Settings) -> dict[int, int | None]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=settings.consumer_group,
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        return {
            p: await consumer.committed(TopicPartition(settings.events_topic, p))
            for p in range(settings.partitions)
        }
    finally:
        await consumer.stop()


async def test_sink_stops_on_an_engine_error_without_committing_or_advancing(
    settings: Settings,
) -> None:
    """A deterministic engine error for a batch: the worker exits with it; nothing of the
    batch is committed to Kafka or counted as stored (watermarks stay where they were)."""
    await ensure_topics(settings)
    good = [event_dict(tenant="acme") for _ in range(5)]
    poison = [event_dict(tenant="poison") for _ in range(5)]
    await produce_raw(settings, [(d["tenant_id"].encode(), wire(d)) for d in good + poison])
    settings = settings.model_copy(update={"sink_flush_interval_ms": 2000})  # one batch
    workers: list[SinkWorker] = []
    with open_store(settings, own=True) as store:
        migrate(store)
        # Raised inside `events_ingest_mv`'s insert into `events`, where error 252 was lost.
        store.command(
            "ALTER TABLE agentaudit.events ADD CONSTRAINT no_poison CHECK tenant_id != 'poison'"
        )
        with pytest.raises(DatabaseError) as raised:
            await sink_until(settings, store, lambda w: workers.append(w) or False)
        assert getattr(raised.value, "code", None) == VIOLATED_CONSTRAINT
        assert scalar(store, "SELECT count() FROM agentaudit.events") == 0
    worker = workers[-1]
    assert worker.processor.counters.accepted == 10
    assert worker.flushes == 0
    assert worker.processor.event_watermark == {}
    assert set((await _committed(settings)).values()) == {None}


@pytest.mark.parametrize("args", [("query", "SELECT 1"), ("migrate",)])
def test_cli_with_an_unreachable_clickhouse_prints_one_line_without_the_password(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    port = free_port()  # nothing listens there: connection refused
    env = {
        **os.environ,
        "AGENTAUDIT_DATA_DIR": str(tmp_path / "data"),
        "COLUMNS": "200",
        "AGENTAUDIT_CLICKHOUSE_URL": f"http://auditor:s3cret-pw@127.0.0.1:{port}/agentaudit",
    }
    result = subprocess.run(
        [sys.executable, "-m", "agentaudit.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 4, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "cannot reach ClickHouse" in lines[0] and "connection refused" in lines[0]
    assert "AGENTAUDIT_CLICKHOUSE_URL" in lines[0]
    assert "s3cret-pw" not in result.stderr + result.stdout


async def test_the_worker_stops_on_an_engine_error_with_one_line_and_exit_6(
    settings: Settings,
) -> None:
    """What an operator sees when the store refuses a batch: one line and its own exit code,
    not a traceback (and not the exit code of an unreachable store)."""
    await ensure_topics(settings)
    docs = [event_dict(tenant="poison") for _ in range(3)]
    await produce_raw(settings, [(d["tenant_id"].encode(), wire(d)) for d in docs])
    await _worker_refused_by_the_store(
        settings,
        "ALTER TABLE agentaudit.events ADD CONSTRAINT no_poison CHECK tenant_id != 'poison'",
        "store refused a batch of events",
    )
    with open_store(settings) as store:
        assert scalar(store, "SELECT count() FROM agentaudit.events") == 0


async def test_a_record_sink_the_store_refuses_stops_the_worker_with_one_line(
    settings: Settings,
) -> None:
    """The record sink ran as a task nobody watched: had the store refused its batch, events
    would have flowed on while alerts silently stopped being stored."""
    from tests.unit.sink.pipeline_records.factories import alert
    from tests.unit.sink.pipeline_records.factories import wire as record_wire

    await ensure_topics(settings)
    await produce_raw(settings, [(b"acme", record_wire(alert()))], topic=settings.alerts_topic)
    await _worker_refused_by_the_store(
        settings,
        "ALTER TABLE agentaudit.alerts ADD CONSTRAINT none_allowed CHECK kind = ''",
        "store refused a batch of pipeline records",
    )


async def _worker_refused_by_the_store(settings: Settings, constraint: str, says: str) -> None:
    """Migrate, add `constraint` (the store will refuse the batch), run `agentaudit worker`:
    it must end with exit 6 and one line that `says` so, no traceback."""
    with open_store(settings, own=True) as store:
        migrate(store)
        store.command(constraint)
    env = {**os.environ, **settings.to_env(), "COLUMNS": "200"}
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "agentaudit.cli.main", "worker", "--no-stream-jobs"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 6, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr
    assert says in result.stderr.strip().splitlines()[-1]
