"""Store mode's cost check (agentaudit.verify.costs) on real chDB: the engine's arithmetic is
the pricing table's, exactly, and a changed cost is found among rows whose usages all differ."""

from __future__ import annotations

import random
from decimal import Decimal
from pathlib import Path

import pytest

from agentaudit.settings import Settings
from agentaudit.sink.rows import EventCost
from agentaudit.store import open_store
from agentaudit.store.protocol import Store
from agentaudit.verify.costs import ATTO_SQL, EXPECTED_NANOS_SQL, RATE_INDEX_SQL, Mode, Repricer
from agentaudit.verify.derived import DerivedCheck
from agentaudit.verify.run import EVERYTHING
from agentaudit_schemas.payloads import Usage
from agentaudit_schemas.pricing import available_versions, load_pricing
from tests.integration.helpers_trail import built_store

pytestmark = pytest.mark.integration

_NANOS_SQL = f"""
SELECT {EXPECTED_NANOS_SQL} FROM (
  SELECT 1 AS g, u.1 AS input_tokens, u.2 AS output_tokens, u.3 AS cached_input_tokens,
         u.4 AS cache_write_tokens, toDateTime64('2026-11-06 10:00:00', 6, 'UTC') AS occurred_at,
         {RATE_INDEX_SQL} AS k, {ATTO_SQL} AS atto
  FROM (SELECT arrayJoin({{usages:Array(Tuple(UInt64, UInt64, UInt64, UInt64))}}) AS u)
)"""


def _usages(rng: random.Random, n: int) -> list[tuple[int, int, int, int]]:
    out = [(0, 0, 0, 0), (1, 1, 0, 0), (1, 0, 1, 0), (1, 0, 0, 1), (10**8, 10**8, 0, 0)]
    for _ in range(n):
        inp = rng.choice([rng.randrange(0, 50), rng.randrange(0, 200_000), rng.randrange(0, 10**8)])
        cached = rng.randrange(0, inp + 1) if rng.random() < 0.5 else 0
        written = rng.randrange(0, inp - cached + 1) if rng.random() < 0.3 else 0
        out.append((inp, rng.randrange(0, 100_000), cached, written))
    return out


def test_the_engines_cost_is_the_pricing_tables_for_every_model(tmp_path: Path) -> None:
    rng = random.Random(20261206)
    usages = _usages(rng, 400)
    settings = Settings(data_dir=tmp_path / "data", key_dir=tmp_path / "keys")
    checked = 0
    with open_store(settings, own=True) as store:
        for version in available_versions():
            cost = EventCost(load_pricing(version))
            repricer = Repricer()
            for row in cost.pricing.models():
                rule = repricer.rule(version, "llm_call", row.provider, row.model)
                if rule.mode is not Mode.PRICED:
                    continue  # judged in Python (rates finer than an atto-dollar)
                params = {
                    "usages": usages,
                    "sw": [rule.switch_us],
                    "ts0": [rule.tiers[0]],
                    "ts1": [rule.tiers[1]],
                    "r": [list(rule.rates)],
                }
                got = [int(n) for (n,) in store.query(_NANOS_SQL, params).result_rows]
                want = [
                    int(
                        cost.llm_call(
                            row.provider,
                            row.model,
                            Usage.model_construct(
                                input_tokens=i,
                                output_tokens=o,
                                cached_input_tokens=c,
                                cache_write_tokens=w,
                            ),
                        )[0].scaleb(9)
                    )
                    for i, o, c, w in usages
                ]
                assert got == want, (version, row.provider, row.model)
                checked += 1
    assert checked >= 10, "the pricing table has priced models"


def _flags(store: Store) -> dict[int, str]:
    return DerivedCheck(store, "", EVERYTHING.start, EVERYTHING.end).of("bench-0", 0)


def test_a_changed_cost_is_found_among_rows_whose_usages_all_differ(tmp_path: Path) -> None:
    with built_store(tmp_path, 300, 1, every=100) as (_, store):
        distinct = store.query("SELECT uniqExact(input_tokens) FROM agentaudit.events").result_rows
        assert distinct[0][0] == 300
        assert _flags(store) == {}
        for sql in (
            "UPDATE cost_usd = cost_usd + toDecimal64('0.000000001', 9) WHERE chain_seq = 3",
            "UPDATE priced = false WHERE chain_seq = 250",
            "UPDATE pricing_version = '2099-01-01' WHERE chain_seq = 17",
            "UPDATE cost_usd = 0 WHERE chain_seq = 299",
        ):
            store.command(f"ALTER TABLE agentaudit.events {sql} SETTINGS mutations_sync = 2")
        assert _flags(store) == {
            3: "cost_usd",
            250: "priced",
            17: "pricing_version",
            299: "cost_usd",
        }


def test_every_row_of_a_group_without_a_rule_is_judged_in_python(tmp_path: Path) -> None:
    """A group the engine has no rule for (here: every group) still has each row re-priced."""
    from agentaudit.verify import costs

    with built_store(tmp_path, 50, 1, every=50) as (_, store):
        store.command(
            "ALTER TABLE agentaudit.events UPDATE cost_usd = cost_usd * 2 "
            "WHERE chain_seq = 7 SETTINGS mutations_sync = 2"
        )
        params = {"tenant": "", "lo": EVERYTHING.start, "hi": EVERYTHING.end}
        no_rules = costs.Rules.none()
        found = store.query(costs.CANDIDATES_SQL, {**params, **no_rules.params()}).result_rows
        assert len(found) == 50  # every row is a candidate
        judged = [(int(r[2]), Repricer().verdict(tuple(r[3:]))) for r in found]
        assert [seq for seq, names in judged if names] == [7]


def test_the_engine_rounds_to_nano_dollars_half_to_even_like_the_pricing(tmp_path: Path) -> None:
    from agentaudit_schemas.pricing.model import quantize_usd

    attos = [
        0,
        1,
        499_999_999,
        500_000_000,
        500_000_001,
        1_500_000_000,
        2_500_000_000,
        112_500_000_000,
        113_500_000_000,
        10**27 + 500_000_000,
        10**27 + 1_500_000_000,
    ]
    settings = Settings(data_dir=tmp_path / "data", key_dir=tmp_path / "keys")
    sql = f"SELECT {EXPECTED_NANOS_SQL} FROM (SELECT arrayJoin({{a:Array(Int128)}}) AS atto)"
    with open_store(settings, own=True) as store:
        got = [int(n) for (n,) in store.query(sql, {"a": attos}).result_rows]
    assert got == [int(quantize_usd(Decimal(a).scaleb(-18)).scaleb(9)) for a in attos]
