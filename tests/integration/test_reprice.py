"""`agentaudit reprice`: history under another pricing version lands in agentaudit.repriced as
a new run; the trail's rows are untouched; totals before and after are reported."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from agentaudit.reprice import reprice
from agentaudit.settings import Settings
from agentaudit.sink.processor import SinkProcessor
from agentaudit.sink.rows import INGEST_COLUMNS, INGEST_TABLE, Source
from agentaudit.store import open_store
from agentaudit.store.migrations import migrate
from agentaudit_schemas.pricing import PriceSource, current_pricing, load_pricing
from agentaudit_schemas.pricing.overrides import parse_overrides
from tests.factories import event_dict

pytestmark = pytest.mark.integration
AT = datetime(2026, 11, 20, 12, tzinfo=UTC)
SNAPSHOT = (
    "SELECT groupArray((event_id, cost_usd, priced, pricing_version)) FROM "
    "(SELECT * FROM agentaudit.events ORDER BY event_id)"
)


def test_reprice_writes_a_new_versioned_result_and_leaves_the_trail_alone(tmp_path: Path) -> None:
    with open_store(Settings(data_dir=tmp_path)) as store:
        migrate(store)
        sink = SinkProcessor(load_pricing("2026-11-01"), dedup_capacity=100)  # the old table
        for i, model in enumerate(["gpt-5-mini", "claude-opus-4-5", "my-deploy", "gpt-5-mini"]):
            doc = event_dict("acme" if i < 3 else "globex", "llm_call")
            doc["event_id"] = f"0190c1f2-0000-7000-8000-{i:012d}"
            doc["occurred_at"] = (AT + timedelta(minutes=i)).isoformat()
            doc["payload"].update(
                provider="anthropic" if "claude" in model else "openai",
                request_model=model,
                response_model=None,
                usage={"input_tokens": 10_000, "output_tokens": 1_000},
            )
            sink.add(
                Source("events", 0, i, int(AT.timestamp() * 1000) + 10**6, b"k"), orjson.dumps(doc)
            )
        batch = sink.take()
        store.insert(
            INGEST_TABLE, [list(c) for c in zip(*batch.events, strict=True)], INGEST_COLUMNS
        )
        before = store.query(SNAPSHOT).result_rows

        new = PriceSource(
            parse_overrides(
                "overrides:\n  - {provider: openai, model: my-deploy, price_as: {provider: "
                "openai, model: gpt-5}}\n"
            )
        )
        done = reprice(
            store,
            new,
            AT - timedelta(hours=1),
            AT + timedelta(hours=1),
            now=lambda: AT + timedelta(days=1),
        )
        assert store.query(SNAPSHOT).result_rows == before  # originals untouched
        # old table: gpt-5-mini 0.25/2.00 (x2), opus-4-5 and my-deploy unpriced
        mini = (10_000 * Decimal("0.25") + 1_000 * Decimal(2)) / 10**6
        assert (done.rows, done.usd_before, done.unpriced_before) == (4, 2 * mini, 2)
        opus = (10_000 * Decimal(5) + 1_000 * Decimal(25)) / 10**6
        gpt5 = (10_000 * Decimal("1.25") + 1_000 * Decimal(10)) / 10**6
        assert (done.usd_after, done.unpriced_after) == (2 * mini + opus + gpt5, 0)
        stored = store.query(
            "SELECT count(), sum(cost_usd), sum(original_cost_usd), any(pricing_version), "
            "uniqExact(original_pricing_version) FROM agentaudit.repriced WHERE run_id = "
            "{r:String}",
            {"r": done.run_id},
        ).result_rows[0]
        assert stored == (4, done.usd_after, done.usd_before, new.version, 1)

        only = reprice(
            store,
            current_pricing(""),
            AT - timedelta(hours=1),
            AT + timedelta(hours=1),
            tenant="globex",
            now=lambda: AT + timedelta(days=2),
        )
        assert only.rows == 1 and only.run_id != done.run_id
        assert store.query(
            "SELECT uniqExact(run_id), count() FROM agentaudit.repriced"
        ).result_rows == [(2, 5)]
