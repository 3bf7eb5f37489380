"""`PricingTable`: resolve (provider, model) to a price row and price a `Usage`.

`cost()` runs once per `llm_call` event in the sink, so the hot path is a dict hit on
(provider, model) followed by four Decimal multiplications; name resolution (aliases, dated
snapshots) happens once per distinct name and is memoised.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal

from agentaudit_schemas.payloads import UsageCounts
from agentaudit_schemas.pricing.model import (
    DECIMAL_CONTEXT,
    ZERO_USD,
    Cost,
    ModelPrice,
    quantize_usd,
)

# Bounds memory when callers send many distinct (possibly junk) model names: on overflow the
# memo is dropped and rebuilt, which costs one slow lookup per name, never correctness.
_MEMO_LIMIT = 4096
_SNAPSHOT_WORDS = frozenset({"latest", "preview"})
_MISSING = object()


def _is_snapshot_suffix(suffix: str) -> bool:
    """True for what vendors append to pin or float a version of the *same* model.

    `2025-08-07`, `20250929`, `2411`, `001`, `latest`, `preview-05-20`: yes. `pro`, `mini`,
    `lite`, `5` (as in `claude-opus-4-5`), `chat-latest`: no; those are different models
    with their own prices and must not inherit the base row's.
    """
    parts = suffix.split("-")
    head = parts[0]
    if not ((head.isdecimal() and head.isascii() and len(head) >= 3) or head in _SNAPSHOT_WORDS):
        return False
    return all((p.isdecimal() and p.isascii()) or p in _SNAPSHOT_WORDS for p in parts[1:])


def normalise_model_name(model: str) -> str:
    """Lower-case; keep the last path segment (`models/gemini-2.5-pro`, `openai/gpt-5`);
    Vertex's `claude-sonnet-4-5@20250929` becomes `claude-sonnet-4-5-20250929`."""
    name = model.strip().lower()
    if "/" in name:
        name = name.rsplit("/", 1)[1]
    return name.replace("@", "-")


class PricingTable:
    """One immutable version of the price list. Build it with
    `agentaudit_schemas.pricing.load_pricing`."""

    __slots__ = ("_memo", "_provider_aliases", "_rows", "_unpriced", "version")

    def __init__(
        self,
        version: str,
        rows: Mapping[str, Mapping[str, ModelPrice]],
        provider_aliases: Mapping[str, str] | None = None,
    ) -> None:
        """`rows`: provider → name (canonical names and aliases alike) → price row."""
        self.version = version
        self._rows = {p: dict(names) for p, names in rows.items()}
        self._provider_aliases = dict(provider_aliases or {})
        self._memo: dict[tuple[str, str], ModelPrice | None] = {}
        self._unpriced = Cost(usd=ZERO_USD, pricing_version=version, priced=False)

    def __repr__(self) -> str:
        return f"PricingTable(version={self.version!r}, models={len(self.models())})"

    def models(self) -> list[ModelPrice]:
        """Every distinct price row (aliases collapsed), sorted by provider and model."""
        unique = {id(r): r for names in self._rows.values() for r in names.values()}
        return sorted(unique.values(), key=lambda r: (r.provider, r.model))

    def resolve(
        self, provider: str, model: str, *, at: datetime | None = None, tenant: str = ""
    ) -> ModelPrice | None:
        """The price row for a provider's model name, or None when the table has none. A
        hand-kept table has one price per model: `at` and `tenant` do not change it."""
        key = (provider, model)
        row = self._memo.get(key, _MISSING)
        if row is _MISSING:
            row = self._lookup(provider, model)
            if len(self._memo) >= _MEMO_LIMIT:
                self._memo.clear()
            self._memo[key] = row
        return row  # type: ignore[return-value]

    def _lookup(self, provider: str, model: str) -> ModelPrice | None:
        prov = provider.strip().lower()
        names = self._rows.get(self._provider_aliases.get(prov, prov))
        if not names:
            return None
        name = normalise_model_name(model)
        row = names.get(name)
        if row is not None:
            return row
        # Longest listed prefix at a `-` boundary; only a snapshot-shaped rest may inherit it.
        cut = name.rfind("-")
        while cut > 0:
            row = names.get(name[:cut])
            if row is not None:
                return row if _is_snapshot_suffix(name[cut + 1 :]) else None
            cut = name.rfind("-", 0, cut)
        return None

    def cost(
        self,
        provider: str,
        model: str,
        usage: UsageCounts,
        *,
        at: datetime | None = None,
        tenant: str = "",
    ) -> Cost:
        """Price one call. Never raises for an unknown provider or model: returns `priced=False`.

        Uncached input = input - cached_input - cache_write tokens (Usage guarantees >= 0);
        each kind at its own rate; output (reasoning included) at the output rate.
        """
        row = self.resolve(provider, model)
        return self._unpriced if row is None else row_cost(row, usage, self.version)

    def total(
        self,
        provider: str,
        model: str,
        usage: UsageCounts,
        *,
        at: datetime | None = None,
        tenant: str = "",
    ) -> Decimal | None:
        """`cost(...).usd` without the breakdown, or None when unpriced: the sink's hot path."""
        row = self.resolve(provider, model)
        return None if row is None else _price(row, usage)[0]


def row_cost(row: ModelPrice, usage: UsageCounts, version: str) -> Cost:
    """The `Cost` of one call at `row`'s prices, with its breakdown."""
    total, input_usd, cached_usd, write_usd, output_usd = _price(row, usage)
    return Cost(
        usd=total,
        pricing_version=version,
        priced=True,
        priced_as=row.model,
        input_usd=input_usd,
        cached_input_usd=cached_usd,
        cache_write_usd=write_usd,
        output_usd=output_usd,
    )


def price_total(row: ModelPrice, usage: UsageCounts) -> Decimal:
    """`row_cost(...).usd` without the breakdown: the hot path."""
    return _price(row, usage)[0]


def tier_row(row: ModelPrice, input_tokens: int) -> ModelPrice:
    """The row in force for a call of `input_tokens` (all input, cached included): the highest
    tier whose start it exceeds, else `row` itself."""
    for start, tier in reversed(row.tiers):
        if input_tokens > start:
            return tier
    return row


def _price(
    row: ModelPrice, usage: UsageCounts
) -> tuple[Decimal, Decimal, Decimal, Decimal, Decimal]:
    """(total, input, cached input, cache write, output) USD of one call at `row`'s prices."""
    # Context methods, not operators: the ambient (thread-local) context may have been
    # changed by the host application; results must not depend on it.
    mul = DECIMAL_CONTEXT.multiply
    add = DECIMAL_CONTEXT.add
    if row.tiers:
        row = tier_row(row, usage.input_tokens)
    cached = usage.cached_input_tokens
    written = usage.cache_write_tokens
    fresh = usage.input_tokens - cached - written
    input_usd = mul(row.input_rate, fresh)
    cached_usd = mul(row.cached_input_rate, cached) if cached else ZERO_USD
    write_usd = mul(row.cache_write_rate, written) if written else ZERO_USD
    output_usd = mul(row.output_rate, usage.output_tokens)
    total = add(add(input_usd, cached_usd), add(write_usd, output_usd))
    if not row.nano_exact:
        # Exact sum first, then round once; parts are rounded on their own.
        return (
            quantize_usd(total),
            quantize_usd(input_usd),
            quantize_usd(cached_usd),
            quantize_usd(write_usd),
            quantize_usd(output_usd),
        )
    return total, input_usd, cached_usd, write_usd, output_usd
