"""Store mode's cost check: every row's stored cost against its re-pricing.

Python decides (`Repricer`: the sink's own `EventCost` with the row's ``pricing_version``,
from its typed columns), but it sees only the rows the engine cannot clear. The engine
clears a row when its stored ``(cost_usd, priced, pricing_version)`` equals what its group's
rule gives, groups being (pricing version, type, provider, model): few, resolved in Python
against the pricing table, passed to the one query as arrays (`CANDIDATES_SQL`):

- not an ``llm_call``: free — cost 0, priced, no version;
- an ``llm_call`` of a model the table does not know: cost 0, not priced;
- an ``llm_call`` of a known model: the table's per-token rates as whole atto-dollars
  (10^-18 USD), ``Σ rate × tokens`` in 128-bit integers, rounded half to even to nano-dollars
  — `schemas.pricing.table._price`'s arithmetic, exactly (tests/integration/test_costs.py
  compares the two over every model of every pricing version);
- anything else (an unknown pricing version, a rate finer than an atto-dollar): no rule, every
  row goes to Python.

So a clean store costs one pass over typed columns in the engine, however many distinct
usages it holds, and a row the engine's arithmetic got wrong can only be a false alarm that
Python then clears, never a miss — unless the engine agreed with a tampered value by mistake,
which the equivalence test rules out.
"""

from __future__ import annotations

from decimal import Decimal
from enum import IntEnum
from typing import Any, NamedTuple, cast

from agentaudit.sink.rows import EventCost, Priced
from agentaudit.sqlguard import Limits
from agentaudit.store.protocol import Store
from schemas.payloads import Usage
from schemas.pricing import load_pricing

_FENCE = Limits(max_seconds=600.0, max_rows=1_000_000).clause()
_FREE: Priced = (Decimal(0), True, "")
_MEMO = 200_000  # remembered pricing verdicts, at most
PRICED_BY = ("cost_usd", "priced", "pricing_version", "type", "provider", "request_model",
             "response_model", "input_tokens", "output_tokens", "cached_input_tokens",
             "cache_write_tokens")  # fmt: skip
"""A row's stored cost and the typed columns it is re-priced from."""
_ATTO = 18  # rates in whole 10^-18 USD per token


class Mode(IntEnum):
    """How the engine judges a group's rows (`CANDIDATES_SQL`)."""

    IN_PYTHON = 0  # no rule: every row is re-priced in Python (also: a group not listed)
    FREE = 1
    UNPRICED = 2
    PRICED = 3


_GROUP = ("(toString(pricing_version), toString(type), toString(provider), "
          "toString(if(response_model = '', request_model, response_model)))")  # fmt: skip

EXPECTED_NANOS_SQL = """(
  intDiv(atto, 1000000000)
  + toInt128(atto % 1000000000 > 500000000
             OR (atto % 1000000000 = 500000000 AND intDiv(atto, 1000000000) % 2 = 1))
)"""
"""Nano-dollars of ``atto`` (an Int128 sum, never negative for valid usage), half to even."""

ATTO_SQL = """(
  toInt128({r_in:Array(Int64)}[g])
    * (toInt128(input_tokens) - toInt128(cached_input_tokens) - toInt128(cache_write_tokens))
  + toInt128({r_cached:Array(Int64)}[g]) * toInt128(cached_input_tokens)
  + toInt128({r_write:Array(Int64)}[g]) * toInt128(cache_write_tokens)
  + toInt128({r_out:Array(Int64)}[g]) * toInt128(output_tokens)
)"""
"""Σ rate × tokens in atto-dollars for the row's group ``g`` (`_price`'s sum)."""


def rows_in(t: str = "") -> str:
    """The rows of the tenant (or all) in the window; columns of table alias ``t``."""
    return (
        f"({{tenant:String}} = '' OR {t}tenant_id = {{tenant:String}}) "
        f"AND {t}occurred_at >= {{lo:DateTime64(6, 'UTC')}} "
        f"AND {t}occurred_at < {{hi:DateTime64(6, 'UTC')}}"
    )


_GROUPS_SQL = f"SELECT DISTINCT {_GROUP} FROM agentaudit.events WHERE {rows_in()} {_FENCE}"

CANDIDATES_SQL = f"""
WITH indexOf({{groups:Array(Tuple(String, String, String, String))}}, {_GROUP}) AS g,
     {ATTO_SQL} AS atto
SELECT tenant_id, kafka_partition, chain_seq, {", ".join(PRICED_BY)}
FROM agentaudit.events
WHERE {rows_in()} AND NOT multiIf(
  {{modes:Array(UInt8)}}[g] = {Mode.FREE:d},
    reinterpretAsInt64(cost_usd) = 0 AND priced AND pricing_version = '',
  {{modes:Array(UInt8)}}[g] = {Mode.UNPRICED:d}, reinterpretAsInt64(cost_usd) = 0 AND NOT priced,
  {{modes:Array(UInt8)}}[g] = {Mode.PRICED:d},
    priced AND toInt128(reinterpretAsInt64(cost_usd)) = {EXPECTED_NANOS_SQL},
  false)
{_FENCE}"""
"""Rows whose stored cost the engine cannot clear, with what Python re-prices them from."""


class Rules(NamedTuple):
    """Per group (`_GROUP`): its key, `Mode` and atto-dollar rates (the query's arrays)."""

    groups: list[tuple[str, str, str, str]]
    modes: list[int]
    r_in: list[int]
    r_cached: list[int]
    r_write: list[int]
    r_out: list[int]

    def params(self) -> dict[str, Any]:
        return dict(self._asdict())


def _atto(rate: Decimal) -> int | None:
    scaled = rate.scaleb(_ATTO)
    return int(scaled) if scaled == scaled.to_integral_value() and scaled < 2**63 else None


class _Tokens(NamedTuple):
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int


class Repricer:
    """The sink's pricing of one row from its stored typed columns (`PRICED_BY` values): the
    names of the stored values that disagree, '' when none do."""

    def __init__(self) -> None:
        self._costs: dict[str, EventCost | None] = {}
        self._seen: dict[tuple[Any, ...], str] = {}

    def verdict(self, combo: tuple[Any, ...]) -> str:
        """Comma-separated names among cost_usd, priced, pricing_version (remembered)."""
        bad = self._seen.get(combo)
        if bad is None:
            bad = self._cost(Decimal(combo[0]), bool(combo[1]), str(combo[2]), combo[3:])
            if len(self._seen) < _MEMO:
                self._seen[combo] = bad
        return bad

    def rules(self, store: Store, params: dict[str, Any]) -> Rules:
        """The rule of every group in the window (`Mode`, rates)."""
        out = Rules([], [], [], [], [], [])
        for (key,) in store.query(_GROUPS_SQL, params).result_rows:
            version, type_, provider, model = (str(k) for k in key)
            mode, rates = self.rule(version, type_, provider, model)
            out.groups.append((version, type_, provider, model))
            out.modes.append(mode)
            for array, rate in zip((out.r_in, out.r_cached, out.r_write, out.r_out), rates, strict=True):
                array.append(rate)
        return out

    def rule(self, version: str, type_: str, provider: str, model: str) -> tuple[Mode, tuple[int, ...]]:
        """How the engine judges one group's rows: its `Mode` and atto-dollar rates (input,
        cached input, cache write, output)."""
        none = (0, 0, 0, 0)
        if type_ != "llm_call":
            return Mode.FREE, none
        cost = self._pricing(version)
        if cost is None or cost.pricing.version != version:
            return Mode.IN_PYTHON, none
        row = cost.pricing.resolve(provider, model)
        if row is None:
            return Mode.UNPRICED, none
        rates = tuple(_atto(r) for r in (row.input_rate, row.cached_input_rate,
                                         row.cache_write_rate, row.output_rate))  # fmt: skip
        if any(r is None for r in rates):
            return Mode.IN_PYTHON, none
        return Mode.PRICED, cast(tuple[int, ...], rates)

    def _cost(self, cost: Decimal, priced: bool, version: str, pricing: tuple[Any, ...]) -> str:
        type_, provider, request_model, response_model, inp, out, cached, written = pricing
        expected = _FREE
        if type_ == "llm_call":
            table = self._pricing(version)
            if table is None:
                return "pricing_version"
            # The pricing reads these four attributes only: a pydantic model per row would
            # cost more than the pricing itself.
            usage = cast(Usage, _Tokens(int(inp), int(out), int(cached), int(written)))
            expected = table.llm_call(str(provider), str(response_model or request_model), usage)
        got = (cost, priced, version)
        if got == expected:
            return ""
        names = ("cost_usd", "priced", "pricing_version")
        return ",".join(n for n, a, b in zip(names, got, expected, strict=True) if a != b)

    def _pricing(self, version: str) -> EventCost | None:
        if version not in self._costs:
            try:
                self._costs[version] = EventCost(load_pricing(version)) if version else None
            except (LookupError, ValueError):
                self._costs[version] = None
        return self._costs[version]


def disagreeing(store: Store, params: dict[str, Any]) -> list[tuple[str, int, int, str]]:
    """(tenant, partition, chain_seq, names) of every row in the window whose stored cost,
    priced flag or pricing version disagrees with its re-pricing."""
    repricer = Repricer()
    rules = repricer.rules(store, params)
    found = store.query(CANDIDATES_SQL, {**params, **rules.params()}).result_rows
    out = []
    for t, p, seq, *combo in found:
        names = repricer.verdict(tuple(combo))
        if names:
            out.append((str(t), int(p), int(seq), names))
    return out
