"""verify's cost check on rows priced by the current pricing (genai_prices snapshot, tiers,
price epochs, a tenant's override): the engine clears every such row exactly, and a tampered
cost is found. Also the engine's arithmetic equals the pricing for every snapshot model."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from agentaudit.settings import Settings
from agentaudit.sink.processor import SinkProcessor
from agentaudit.sink.rows import INGEST_COLUMNS, INGEST_TABLE, EventCost, Source
from agentaudit.store import ClickHouseStore, open_store
from agentaudit.store.migrations import migrate
from agentaudit.verify import costs
from agentaudit.verify.run import EVERYTHING
from agentaudit_schemas.payloads import Usage
from agentaudit_schemas.pricing import PriceSource, current_pricing
from agentaudit_schemas.pricing.genai import genai_source
from tests.factories import event_dict

pytestmark = pytest.mark.integration

OVERRIDES = """\
overrides:
  - tenant: acme
    provider: openai
    model: gpt-5-mini
    rates: {input: 0.20, cached_input: 0.02, output: 1.60}
  - provider: azure.ai.openai
    model: prod-gpt5
    price_as: {provider: openai, model: gpt-5.6}
"""
SWITCH = datetime(2026, 8, 21, tzinfo=UTC)  # gpt-5.6: 5/30 before, 4/20 from


def _calls() -> Iterator[dict[str, Any]]:
    i = 0
    plan = [
        ("acme", "openai", "gpt-5-mini"),
        ("globex", "openai", "gpt-5-mini"),
        ("acme", "openai", "gpt-5.6"),
        ("acme", "azure.ai.openai", "prod-gpt5"),
        ("globex", "anthropic", "claude-sonnet-4-5"),
        ("acme", "gcp.gemini", "gemini-3.1-pro-preview"),
        ("acme", "openai", "gpt-9-ultra"),
    ]
    for tenant, provider, model in plan:
        for hours in (-30, -2, 1, 30):  # both sides of the gpt-5.6 price cut
            for inp in (1_000, 200_000, 272_001, 300_000):  # both sides of each tier
                i += 1
                doc = event_dict(tenant, "llm_call")
                doc["event_id"] = f"0190c1f2-0000-7000-8000-{i:012d}"
                doc["occurred_at"] = (SWITCH + timedelta(hours=hours, seconds=i)).isoformat()
                doc["payload"].update(
                    provider=provider,
                    request_model=model,
                    response_model=None,
                    usage={
                        "input_tokens": inp,
                        "output_tokens": 777 + i,
                        "cached_input_tokens": inp // 3,
                        "cache_write_tokens": inp // 9,
                    },
                )
                yield doc


@pytest.fixture(scope="module")
def trail(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ClickHouseStore, Path, PriceSource]]:
    data = tmp_path_factory.mktemp("pricing-verify")
    path = data / "prices.yaml"
    path.write_text(OVERRIDES)
    pricing = current_pricing(path, data)
    with open_store(Settings(data_dir=data)) as store:
        migrate(store)
        sink = SinkProcessor(pricing, dedup_capacity=10_000)
        stamp = int((SWITCH + timedelta(days=3)).timestamp() * 1000)
        for offset, doc in enumerate(_calls()):
            sink.add(
                Source("events", 0, offset, stamp, doc["tenant_id"].encode()), orjson.dumps(doc)
            )
        batch = sink.take()
        assert sink.counters.accepted == len(batch.events) == 7 * 16
        store.insert(
            INGEST_TABLE, [list(c) for c in zip(*batch.events, strict=True)], INGEST_COLUMNS
        )
        yield store, data, pricing


PARAMS = {"tenant": "", "lo": EVERYTHING.start, "hi": EVERYTHING.end}


def test_the_engine_clears_every_row_the_current_pricing_wrote(trail: Any) -> None:
    store, data, pricing = trail
    repricer = costs.Repricer(data)
    rules = repricer.rules(store, PARAMS)
    modes = dict(zip(rules.groups, rules.modes, strict=True))
    assert rules.ovt == ["acme"]
    assert (
        modes[(pricing.version, "llm_call", "openai", "gpt-9-ultra", "acme")] == costs.Mode.UNPRICED
    )
    assert set(modes.values()) == {costs.Mode.PRICED, costs.Mode.UNPRICED}  # none left to Python
    assert store.query(costs.CANDIDATES_SQL, {**PARAMS, **rules.params()}).result_rows == []
    assert costs.disagreeing(store, PARAMS, data) == []
    priced = store.query(
        "SELECT countIf(priced), countIf(NOT priced), uniqExact(pricing_version) "
        "FROM agentaudit.events"
    ).result_rows[0]
    assert priced == (6 * 16, 16, 1)


def test_a_tampered_cost_is_found(trail: Any) -> None:
    store, data, _ = trail
    seqs = store.query(
        "SELECT chain_seq FROM agentaudit.events WHERE tenant_id = 'acme' "
        "AND provider = 'azure.ai.openai' AND input_tokens = 300000 "
        "ORDER BY occurred_at LIMIT 1"
    ).result_rows
    seq = int(seqs[0][0])
    store.command(
        "ALTER TABLE agentaudit.events UPDATE cost_usd = cost_usd + "
        f"toDecimal64('0.000000001', 9) WHERE tenant_id = 'acme' AND chain_seq = {seq} "
        "SETTINGS mutations_sync = 2"
    )
    try:
        assert costs.disagreeing(store, PARAMS, data) == [("acme", 0, seq, "cost_usd")]
    finally:
        store.command(
            "ALTER TABLE agentaudit.events UPDATE cost_usd = cost_usd - "
            f"toDecimal64('0.000000001', 9) WHERE tenant_id = 'acme' AND chain_seq = {seq} "
            "SETTINGS mutations_sync = 2"
        )


_NANOS_SQL = f"""
SELECT {costs.EXPECTED_NANOS_SQL} FROM (
  SELECT x.1 AS g, x.2 AS input_tokens, x.3 AS output_tokens, x.4 AS cached_input_tokens,
         x.5 AS cache_write_tokens, fromUnixTimestamp64Micro(x.6, 'UTC') AS occurred_at,
         {costs.RATE_INDEX_SQL} AS k, {costs.ATTO_SQL} AS atto
  FROM (SELECT arrayJoin({{rows:Array(Tuple(UInt32, UInt64, UInt64, UInt64, UInt64, Int64))}}) AS x)
)"""


def test_the_engines_arithmetic_is_the_pricings_for_every_snapshot_model(trail: Any) -> None:
    """Every model of the snapshot, each pair of adjacent price epochs as one rule, both
    sides of the switch and of each tier: the engine's nano-dollars = the pricing's."""
    from genai_prices.data import providers

    store, _, _ = trail
    pricing = current_pricing("")
    cost, repricer = EventCost(pricing), costs.Repricer()
    rules: list[costs.Rule] = []
    rows: list[tuple[int, ...]] = []
    want: list[int] = []
    for provider in providers:
        for info in provider.models:
            epochs = genai_source().lookup(provider.id, info.id)
            if epochs is None or epochs.info is not None:
                continue
            for first in range(max(1, len(epochs.rows) - 1)):
                lo = max(epochs.bounds[first], datetime(2020, 1, 1, tzinfo=UTC))
                hi = epochs.bounds[first + 1] if first + 1 < len(epochs.rows) else lo
                rule = repricer.rule(
                    pricing.version, "llm_call", provider.id, info.id, lo=lo, hi=hi
                )
                if rule.mode is not costs.Mode.PRICED:
                    continue
                rules.append(rule)
                starts = {t for t in rule.tiers if t != costs.NEVER} | {5_000}
                for at in {lo, hi, hi - timedelta(microseconds=1)}:
                    for inp in sorted(starts | {s + 1 for s in starts}):
                        usage = (inp, 3_001, inp // 3, inp // 7)
                        us = int((at - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() * 10**6)
                        rows.append((len(rules), *usage, us))
                        got = cost.llm_call(
                            provider.id,
                            info.id,
                            Usage.model_construct(
                                input_tokens=usage[0],
                                output_tokens=usage[1],
                                cached_input_tokens=usage[2],
                                cache_write_tokens=usage[3],
                            ),
                            at=at,
                        )
                        want.append(int(got[0].scaleb(9)))
    params = {
        "rows": rows,
        "sw": [r.switch_us for r in rules],
        "ts0": [r.tiers[0] for r in rules],
        "ts1": [r.tiers[1] for r in rules],
        "r": [list(r.rates) for r in rules],
    }
    got = [int(n) for (n,) in store.query(_NANOS_SQL, params).result_rows]
    assert got == want
    assert len(rules) > 1_000 and any(r.switch_us != costs.NEVER for r in rules)
