"""The trail measurements of `agentaudit bench` at a tiny size (real broker, chDB, sink)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentaudit.anchors import DirectoryAnchor
from agentaudit.bench.trail_measure import (
    build_signed_store,
    measure_checkpoint_cost,
    measure_store_verify,
    measure_verify,
)
from agentaudit.broker import ensure_topics
from agentaudit.settings import Settings
from agentaudit.store import open_store
from agentaudit.store.migrations import migrate
from tests.factories import event_dict, wire
from tests.integration.helpers import produce_raw, sink_until

pytestmark = pytest.mark.integration


def test_checkpoint_cost_signs_and_anchors_every_chain(tmp_path: Path) -> None:
    figures = measure_checkpoint_cost(30, tmp_path)
    assert figures.chains == 30 and figures.sign_cpu_s > 0
    assert len(DirectoryAnchor(tmp_path).chains()) == 30


def test_verifier_core_figures_come_from_a_valid_run() -> None:
    figures = measure_verify(2_000, chains=2, every=300)
    assert figures.valid and figures.rows == 2_000 and figures.checkpoints == 2 * 4


async def test_store_verify_reads_every_signed_row(settings: Settings) -> None:
    settings = settings.model_copy(update={"checkpoint_interval_s": 0.2})
    await ensure_topics(settings)
    with open_store(settings, own=True) as store:
        migrate(store)
        await produce_raw(
            settings,
            [(b"b-1", wire(event_dict(tenant="b-1", kind="llm_call")))] * 1
            + [(b"b-2", wire(event_dict(tenant="b-2"))) for _ in range(30)],
        )
        await sink_until(settings, store, lambda w: w.processor.counters.accepted >= 31)
        figures = measure_store_verify(settings, store)
    assert figures.valid and figures.rows == 31 and figures.chains == 2


def test_a_built_signed_store_verifies_valid(tmp_path: Path) -> None:
    from agentaudit.keyring import init_keys

    settings = Settings(data_dir=tmp_path / "data", key_dir=tmp_path / "keys", partitions=3)
    init_keys(settings.key_dir)
    with open_store(settings, own=True) as store:
        migrate(store)
        signed = build_signed_store(settings, store, 600, 3, every=100)
        figures = measure_store_verify(settings, store)
    assert signed == 3 * 2 and figures.valid and figures.rows == 600 and figures.chains == 3


def test_a_forged_row_far_ahead_is_reached_without_walking_the_gap(tmp_path: Path) -> None:
    """Rows are read by ranges of chain_seq: a row at seq 10^12 must not cost 2·10^7 queries."""
    from decimal import Decimal

    from agentaudit.sink.rows import INGEST_COLUMNS, INGEST_TABLE
    from agentaudit.verify.run import public_keys, verify_store
    from tests.integration.helpers_trail import built_store

    with built_store(tmp_path, 100, 1, every=100) as (settings, store):
        far = 10**12
        payload = (
            b'{"event_id":"0190c1f2-0000-7000-8000-000000000001",'
            b'"occurred_at":"2026-11-06T10:00:00Z","tenant_id":"bench-0","type":"tool_call"}'
        )
        row = [
            payload,
            Decimal(0),
            True,
            "",
            settings.events_topic,
            0,
            far,
            0,
            far,
            "0" * 64,
            "0" * 64,
            "0" * 64,
            0,
        ]
        store.insert(INGEST_TABLE, [[v] for v in row], INGEST_COLUMNS)
        reports = verify_store(settings, store, public_keys(settings))
    lines = [ln.render() for rep in reports for ln in rep.lines]
    assert (
        f"Rows localhost/agentaudit/bench-0/p0 101-{far}\tmissing rows (seq 101-{far - 1})" in lines
    )
