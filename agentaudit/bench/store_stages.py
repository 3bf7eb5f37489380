"""CPU per event of the store side of a sink insert, by stage, at a small and a large batch.

Stages (µs of CPU per row, minimum over repeats, this process's CPU: chDB's threads and
merges included):
- `encode`: clickhouse-connect's Native encoding of the rows (paid in the sink process);
- `http`: the rest of `Store.insert` through the owner's HTTP endpoint (the request on both
  sides and the server's per-insert statements): the whole call minus `encode` and `engine`;
- `engine`: chDB alone (`send_insert` of the encoded block into `events_ingest`: the JSON
  view deriving `events`, the MergeTree part, the `spend_hourly` view);
- `spend_view`: the part of `engine` that the `spend_hourly` view costs (measured by
  dropping it);
- `whole`: `Store.insert` as the sink calls it.
Rows are a real batch: SDK-shaped events through `SinkProcessor`. They go to copies of the
tables in a scratch database, never to the trail the other measurements use.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import chdb.session

from agentaudit.bench.cpu import own_cpu_s
from agentaudit.bench.sink_stages import START, sdk_events
from agentaudit.settings import Settings
from agentaudit.sink.processor import SinkProcessor
from agentaudit.sink.rows import INGEST_COLUMNS, INGEST_TABLE
from agentaudit.store.client import ClickHouseStore
from agentaudit_schemas.pricing import load_pricing

SCRATCH = "bench_stages"
_TABLES = ("events", "events_ingest", "spend_hourly")
_VIEWS = ("events_ingest_mv", "spend_hourly_mv")
STORE_STAGES = ("encode", "http", "engine", "spend_view", "whole")


@dataclass
class StoreStages:
    batch_rows: int
    us_per_row: dict[str, float]


def ingest_columns(n: int) -> list[list[Any]]:
    """`n` rows of `events_ingest`, column-oriented, as the sink builds them."""
    processor = SinkProcessor(load_pricing(), dedup_capacity=max(n, 1000), clock=lambda: START)
    for source, value in sdk_events(n):
        processor.add(source, value)
    rows = processor.take().events
    return [list(col) for col in zip(*rows, strict=True)]


def _engine_insert(session: Any, statement: str, native: bytes) -> None:
    inserter = session.send_insert(statement, "Native")
    inserter.append(native)
    inserter.finish()


def _cpu_per_row(fn: Callable[[], object], *, inserts: int, rows: int, repeats: int) -> float:
    """Minimum over `repeats` of this process's CPU µs per row for `inserts` calls of `fn`."""
    best = float("inf")
    for _ in range(repeats):
        gc.collect()
        c0 = own_cpu_s()
        for _ in range(inserts):
            fn()
        best = min(best, own_cpu_s() - c0)
    return best / rows * 1e6


def _create_scratch(session: Any) -> None:
    session.query(f"DROP DATABASE IF EXISTS {SCRATCH}", "TabSeparated")
    session.query(f"CREATE DATABASE {SCRATCH}", "TabSeparated")
    for table in _TABLES:
        session.query(f"CREATE TABLE {SCRATCH}.{table} AS agentaudit.{table}", "TabSeparated")
    for view in _VIEWS:
        ddl = session.query(
            "SELECT create_table_query FROM system.tables "
            f"WHERE database = 'agentaudit' AND name = '{view}'",
            "RawBLOB",
        ).bytes()
        session.query(ddl.decode().replace("agentaudit.", f"{SCRATCH}."), "TabSeparated")


def measure_store_stages(
    settings: Settings,
    store: ClickHouseStore,
    batch_sizes: tuple[int, ...] = (500, 20_000),
    rows_per_repeat: int = 20_000,
    repeats: int = 3,
) -> list[StoreStages]:
    """Store-side µs of CPU per row by stage (`STORE_STAGES`) for each batch size. The store
    must be owned by this process (its engine runs here, so its CPU is counted)."""
    columns = ingest_columns(max(batch_sizes))
    session: Any = chdb.session.Session(str(settings.store_dir))
    table = f"{SCRATCH}.events_ingest"
    statement = f"INSERT INTO {table} ({', '.join(INGEST_COLUMNS)})"
    results: list[StoreStages] = []
    try:
        _create_scratch(session)
        for size in batch_sizes:
            block = [col[:size] for col in columns]
            inserts = max(1, rows_per_repeat // size)
            native = store.encode(INGEST_TABLE, block, INGEST_COLUMNS)
            engine = partial(_engine_insert, session, statement, native)
            per_row = partial(_cpu_per_row, inserts=inserts, rows=inserts * size, repeats=repeats)
            us = {
                "encode": per_row(partial(store.encode, INGEST_TABLE, block, INGEST_COLUMNS)),
                "whole": per_row(partial(store.insert, table, block, INGEST_COLUMNS)),
                "engine": per_row(engine),
            }
            session.query(f"DROP VIEW {SCRATCH}.spend_hourly_mv", "TabSeparated")
            us["spend_view"] = max(0.0, us["engine"] - per_row(engine))
            _create_scratch(session)  # the view back, the copies emptied
            us["http"] = max(0.0, us["whole"] - us["encode"] - us["engine"])
            results.append(StoreStages(size, {k: us[k] for k in STORE_STAGES}))
    finally:
        session.query(f"DROP DATABASE IF EXISTS {SCRATCH}", "TabSeparated")
        session.close()
    return results
