"""Store mode's cost check: every row's stored cost against its re-pricing.

Python decides (`Repricer`: the sink's own `EventCost` under the row's ``pricing_version``, at
its ``occurred_at``, for its tenant, from its typed columns), but it sees only the rows the
engine cannot clear. The engine clears a row when its stored ``(cost_usd, priced,
pricing_version)`` equals what its group's rule gives, groups being (pricing version, type,
provider, model, tenant if the version's override file names it): few, resolved in Python
against the pricing, passed to the one query as arrays (`CANDIDATES_SQL`):

- not an ``llm_call``: free — cost 0, priced, no version;
- an ``llm_call`` of a model the pricing does not know: cost 0, not priced;
- an ``llm_call`` of a known model: per-token rates as whole atto-dollars (10^-18 USD), ``Σ rate ×
  tokens`` in 128-bit integers, rounded half to even to nano-dollars —
  `agentaudit_schemas.pricing.table._price`'s arithmetic, exactly. A rule holds two price epochs
  (the price before and from a switch instant: a price change inside the group's rows) and, per
  epoch, one long-context tier (the whole call at the tier's rates when ``input_tokens`` > its
  start): 16 rates per group (tests/integration/test_costs.py compares the engine with the pricing
  over every model of every hand-kept table and of the genai_prices snapshot);
- anything else (an unknown pricing version, a rate finer than an atto-dollar, more than two
  price epochs in the window, more than one tier, time-of-day prices): no rule, every row goes
  to Python.

So a clean store costs one pass over typed columns in the engine, however many distinct
usages it holds, and a row the engine's arithmetic got wrong can only be a false alarm that
Python then clears, never a miss — unless the engine agreed with a tampered value by mistake,
which the equivalence test rules out.
"""

from __future__ import annotations

import bisect
from datetime import UTC, datetime
from decimal import Decimal
from enum import IntEnum
from pathlib import Path
from typing import Any, NamedTuple, cast

from agentaudit.sink.rows import EventCost, Priced
from agentaudit.sqlguard import Limits
from agentaudit.store.protocol import Store
from agentaudit_schemas.payloads import Usage
from agentaudit_schemas.pricing import PriceSource, pricing_for_version
from agentaudit_schemas.pricing.model import ModelPrice

_FENCE = Limits(max_seconds=600.0, max_rows=1_000_000).clause()
_FREE: Priced = (Decimal(0), True, "")
_MEMO = 200_000  # remembered pricing verdicts, at most
PRICED_BY = (
    "cost_usd",
    "priced",
    "pricing_version",
    "type",
    "provider",
    "request_model",
    "response_model",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "occurred_at",
    "tenant_id",
)
"""A row's stored cost and the typed columns it is re-priced from."""
_ATTO = 18  # rates in whole 10^-18 USD per token
NEVER = 2**62
"""A switch instant (µs) or tier start (tokens) that is never reached."""
RATES = 16
"""Rates per rule: [epoch 0|1][tier 0|1][input, cached input, cache write, output]."""


class Mode(IntEnum):
    """How the engine judges a group's rows (`CANDIDATES_SQL`)."""

    IN_PYTHON = 0  # no rule: every row is re-priced in Python (also: a group not listed)
    FREE = 1
    UNPRICED = 2
    PRICED = 3


_MODEL = "toString(if(response_model = '', request_model, response_model))"
_TENANT = "if(has({ovt:Array(String)}, tenant_id), tenant_id, '')"
_GROUP = f"(toString(pricing_version), toString(type), toString(provider), {_MODEL}, {_TENANT})"

EXPECTED_NANOS_SQL = """(
  intDiv(atto, 1000000000)
  + toInt128(atto % 1000000000 > 500000000
             OR (atto % 1000000000 = 500000000 AND intDiv(atto, 1000000000) % 2 = 1))
)"""
"""Nano-dollars of ``atto`` (an Int128 sum, never negative for valid usage), half to even."""

RATE_INDEX_SQL = """(
  1 + 8 * (toUnixTimestamp64Micro(occurred_at) >= {sw:Array(Int64)}[g])
    + 4 * (toInt64(input_tokens) > if(toUnixTimestamp64Micro(occurred_at) >= {sw:Array(Int64)}[g],
                                      {ts1:Array(Int64)}[g], {ts0:Array(Int64)}[g]))
)"""
"""Where the row's four rates start in its group's 16 (`RATES`): epoch, then tier."""

ATTO_SQL = """(
  toInt128({r:Array(Array(Int64))}[g][k])
    * (toInt128(input_tokens) - toInt128(cached_input_tokens) - toInt128(cache_write_tokens))
  + toInt128({r:Array(Array(Int64))}[g][k + 1]) * toInt128(cached_input_tokens)
  + toInt128({r:Array(Array(Int64))}[g][k + 2]) * toInt128(cache_write_tokens)
  + toInt128({r:Array(Array(Int64))}[g][k + 3]) * toInt128(output_tokens)
)"""
"""Σ rate × tokens in atto-dollars for the row's group ``g`` and rate index ``k`` (`_price`)."""


def rows_in(t: str = "") -> str:
    """The rows of the tenant (or all) in the window; columns of table alias ``t``."""
    return (
        f"({{tenant:String}} = '' OR {t}tenant_id = {{tenant:String}}) "
        f"AND {t}occurred_at >= {{lo:DateTime64(6, 'UTC')}} "
        f"AND {t}occurred_at < {{hi:DateTime64(6, 'UTC')}}"
    )


_GROUPS_SQL = (
    f"SELECT toString(pricing_version), toString(type), toString(provider), {_MODEL}, "
    "tenant_id, min(occurred_at), max(occurred_at) FROM agentaudit.events "
    f"WHERE {rows_in()} GROUP BY 1, 2, 3, 4, 5 {_FENCE}"
)

CANDIDATES_SQL = f"""
WITH indexOf({{groups:Array(Tuple(String, String, String, String, String))}}, {_GROUP}) AS g,
     {RATE_INDEX_SQL} AS k,
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

Group = tuple[str, str, str, str, str]


class Rule(NamedTuple):
    """One group's rule: `Mode`, switch instant (µs), tier start per epoch, 16 rates."""

    mode: Mode
    switch_us: int = NEVER
    tiers: tuple[int, int] = (NEVER, NEVER)
    rates: tuple[int, ...] = (0,) * RATES


class Rules(NamedTuple):
    """Per group (`_GROUP`): its key and rule, as the query's arrays."""

    groups: list[Group]
    modes: list[int]
    sw: list[int]
    ts0: list[int]
    ts1: list[int]
    r: list[list[int]]
    ovt: list[str]

    def params(self) -> dict[str, Any]:
        return dict(self._asdict())

    @classmethod
    def none(cls) -> Rules:
        """No rules: every row goes to Python."""
        return cls([], [], [], [], [], [], [])


def _atto(rate: Decimal) -> int | None:
    scaled = rate.scaleb(_ATTO)
    return int(scaled) if scaled == scaled.to_integral_value() and scaled < 2**63 else None


def _us(moment: datetime) -> int:
    return int((moment - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds()) * 10**6


class _Tokens(NamedTuple):
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int


def _epoch_rates(row: ModelPrice) -> tuple[int, list[int]] | None:
    """(tier start, 8 atto rates: flat then tier) of one epoch's row, or None (no rule)."""
    if len(row.tiers) > 1:
        return None
    start, tier = row.tiers[0] if row.tiers else (NEVER, row)
    rates = [
        _atto(r)
        for p in (row, tier)
        for r in (p.input_rate, p.cached_input_rate, p.cache_write_rate, p.output_rate)
    ]
    if any(r is None for r in rates):
        return None
    return start, cast(list[int], rates)


class Repricer:
    """The sink's pricing of one row from its stored typed columns (`PRICED_BY` values): the
    names of the stored values that disagree, '' when none do. `data_dir` holds the archived
    override files that pricing versions name."""

    def __init__(self, data_dir: Path | None = None) -> None:
        self._data_dir = data_dir
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
        """The rule of every group in the window."""
        rows = store.query(_GROUPS_SQL, params).result_rows
        named: set[str] = set()
        for version in {str(r[0]) for r in rows}:
            cost = self._pricing(version)
            if cost is not None and isinstance(cost.pricing, PriceSource):
                named |= cost.pricing.overrides.tenants
        spans: dict[Group, tuple[datetime, datetime]] = {}
        for version, type_, provider, model, tenant, lo, hi in rows:
            key = (
                str(version),
                str(type_),
                str(provider),
                str(model),
                str(tenant) if tenant in named else "",
            )
            was = spans.get(key)
            spans[key] = (lo, hi) if was is None else (min(was[0], lo), max(was[1], hi))
        out = Rules.none()
        out.ovt.extend(sorted(named))
        for key, (lo, hi) in spans.items():
            rule = self.rule(*key, lo=lo, hi=hi)
            out.groups.append(key)
            out.modes.append(rule.mode)
            out.sw.append(rule.switch_us)
            out.ts0.append(rule.tiers[0])
            out.ts1.append(rule.tiers[1])
            out.r.append(list(rule.rates))
        return out

    def rule(
        self,
        version: str,
        type_: str,
        provider: str,
        model: str,
        tenant: str = "",
        lo: datetime | None = None,
        hi: datetime | None = None,
    ) -> Rule:
        """How the engine judges one group's rows whose `occurred_at` lie in [lo, hi]."""
        if type_ != "llm_call":
            return Rule(Mode.FREE)
        cost = self._pricing(version)
        if cost is None or cost.pricing.version != version:
            return Rule(Mode.IN_PYTHON)
        window, switch = self._window(cost, provider, model, tenant, lo, hi)
        if window is None:
            return Rule(Mode.IN_PYTHON)
        if not window or all(row is None for row in window):
            return Rule(Mode.UNPRICED)
        epochs = [None if row is None else _epoch_rates(row) for row in window]
        if len(epochs) > 2 or any(e is None for e in epochs):
            return Rule(Mode.IN_PYTHON)
        first, last = (
            cast(tuple[int, list[int]], epochs[0]),
            cast(tuple[int, list[int]], epochs[-1]),
        )
        return Rule(
            Mode.PRICED,
            _us(switch) if switch else NEVER,
            (first[0], last[0]),
            tuple(first[1] + last[1]),
        )

    @staticmethod
    def _window(
        cost: EventCost,
        provider: str,
        model: str,
        tenant: str,
        lo: datetime | None,
        hi: datetime | None,
    ) -> tuple[list[ModelPrice | None] | None, datetime | None]:
        """The price rows in force over [lo, hi] and the instant the second one starts;
        (None, None) when no rule can hold them (time-of-day prices)."""
        pricing = cost.pricing
        if not isinstance(pricing, PriceSource):  # a hand-kept table: one price per model
            return [pricing.resolve(provider, model)], None
        found = pricing.epochs(provider, model, tenant)
        if found is None:
            return [], None
        if found.info is not None:
            return None, None
        bounds = found.bounds
        first = bisect.bisect_right(bounds, _aware(lo)) - 1 if lo else 0
        last = bisect.bisect_right(bounds, _aware(hi)) - 1 if hi else len(bounds) - 1
        rows = list(found.rows[first : last + 1])
        return rows, bounds[first + 1] if len(rows) > 1 else None

    def _cost(self, cost: Decimal, priced: bool, version: str, pricing: tuple[Any, ...]) -> str:
        (
            type_,
            provider,
            request_model,
            response_model,
            inp,
            out,
            cached,
            written,
            occurred_at,
            tenant,
        ) = pricing
        expected = _FREE
        if type_ == "llm_call":
            table = self._pricing(version)
            if table is None:
                return "pricing_version"
            # The pricing reads these four attributes only: a pydantic model per row would
            # cost more than the pricing itself.
            usage = cast(Usage, _Tokens(int(inp), int(out), int(cached), int(written)))
            expected = table.llm_call(
                str(provider),
                str(response_model or request_model),
                usage,
                at=_aware(occurred_at),
                tenant=str(tenant),
            )
        got = (cost, priced, version)
        if got == expected:
            return ""
        names = ("cost_usd", "priced", "pricing_version")
        return ",".join(n for n, a, b in zip(names, got, expected, strict=True) if a != b)

    def _pricing(self, version: str) -> EventCost | None:
        if version not in self._costs:
            try:
                found = pricing_for_version(version, self._data_dir) if version else None
                self._costs[version] = EventCost(found) if found is not None else None
            except (LookupError, ValueError):
                self._costs[version] = None
        return self._costs[version]


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def disagreeing(
    store: Store, params: dict[str, Any], data_dir: Path | None = None
) -> list[tuple[str, int, int, str]]:
    """(tenant, partition, chain_seq, names) of every row in the window whose stored cost,
    priced flag or pricing version disagrees with its re-pricing."""
    repricer = Repricer(data_dir)
    rules = repricer.rules(store, params)
    found = store.query(CANDIDATES_SQL, {**params, **rules.params()}).result_rows
    out = []
    for t, p, seq, *combo in found:
        names = repricer.verdict(tuple(combo))
        if names:
            out.append((str(t), int(p), int(seq), names))
    return out
