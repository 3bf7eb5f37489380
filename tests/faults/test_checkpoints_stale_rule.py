"""The CheckpointsStale rule sees a chain that was never signed (marked `faults` by
tests/faults/conftest.py: a migrated store costs ~5 s to set up).

The rule read only `agentaudit.checkpoints`: a chain with rows and no checkpoint at all (a
sink refusing to sign a chain nobody signed, TrailUnsigned) returned no row, so it never
fired, while `agentaudit status` and /metrics (+Inf) called the chain never signed.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from agentaudit.settings import Settings
from agentaudit.sink.processor import SinkProcessor
from agentaudit.sink.rows import INGEST_COLUMNS, INGEST_TABLE, Source
from agentaudit.sink.signing import CHECKPOINT_COLUMNS, CHECKPOINT_TABLE
from agentaudit.store import open_store
from agentaudit.store.migrations import migrate
from agentaudit_schemas.pricing import load_pricing
from dashboards import alerts
from dashboards.macros import QueryContext, expand
from tests.factories import event_dict

AT = datetime(2026, 3, 1, 12, tzinfo=UTC)


def test_a_chain_never_signed_is_a_row_of_the_rule(tmp_path: Path) -> None:
    with open_store(Settings(data_dir=tmp_path)) as store:
        migrate(store)
        sink = SinkProcessor(load_pricing(), dedup_capacity=100)
        stamp = int(datetime.now(UTC).timestamp() * 1000)  # within the sink's clock skew
        for offset, (tenant, partition) in enumerate([("acme", 0), ("acme", 0), ("globex", 1)]):
            doc = event_dict(tenant)
            doc["occurred_at"] = datetime.now(UTC).isoformat()
            sink.add(Source("events", partition, offset, stamp, tenant.encode()), orjson.dumps(doc))
        batch = sink.take()
        assert len(batch.events) == 3
        store.insert(
            INGEST_TABLE, [list(c) for c in zip(*batch.events, strict=True)], INGEST_COLUMNS
        )
        signed = ("tests", "acme", 0, 1, "0" * 64, AT, "0" * 8, False, "", [])
        store.insert(CHECKPOINT_TABLE, [[v] for v in signed], CHECKPOINT_COLUMNS)

        sql = alerts.PIPELINE_SPECS["CheckpointsStale"].query
        window = QueryContext(AT - timedelta(minutes=10), AT)
        rows = {(t, p): age for t, p, age in store.query(expand(sql, window)).result_rows}
    assert set(rows) == {("acme", "0"), ("globex", "1")}, rows
    assert rows[("acme", "0")] > alerts.CHECKPOINT_STALE_S  # signed at AT, long ago
    assert 0 <= rows[("globex", "1")] < 60  # never signed: aged from its first stored row
