"""Value types of the pricing table: one model's prices, and the cost of one call.

Money is `decimal.Decimal` end to end: spend is summed over millions of events and re-priced
by replay, so it must be exact and reproducible, which binary floats are not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Context, Decimal

USD_PLACES = 9
"""Costs are quantized to 1e-9 USD (a nano-dollar): below any provider's billing granularity."""

DECIMAL_CONTEXT = Context(prec=38, rounding=ROUND_HALF_EVEN)
"""Arithmetic context used for every cost, so a caller's thread-local decimal context cannot
change a result. 38 digits cover 1e8 tokens x any per-token rate with room to spare."""

NANO_USD = Decimal(1).scaleb(-USD_PLACES)
ZERO_USD = Decimal(0).quantize(NANO_USD)
_PER_TOKEN = -6  # table prices are per 1,000,000 tokens


def quantize_usd(value: Decimal) -> Decimal:
    """Round to nano-dollars, half to even, independent of the ambient decimal context."""
    return DECIMAL_CONTEXT.quantize(value, NANO_USD)


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """One row of the table: USD per 1M tokens for each kind, plus precomputed per-token rates.

    `cached_input` and `cache_write` equal `input` when the vendor gives no cache-read discount
    or charges no cache-write premium; the loader fills them in, so `cost()` never branches.
    """

    provider: str
    model: str
    input: Decimal
    cached_input: Decimal
    cache_write: Decimal
    output: Decimal
    note: str | None = None
    tiers: tuple[tuple[int, ModelPrice], ...] = ()
    """Long-context tiers, lowest start first: (start, the row in force when the call's
    `input_tokens` > start). A cliff, as providers bill it: the whole call at the tier's rates,
    every kind (genai_prices' `TieredPrices`). Empty for a flat price."""
    # Per-token rates. When every rate is a whole number of nano-dollars (any price with at
    # most 3 decimals per 1M tokens), they are stored with exponent -9: rate x int and sums
    # then come out exactly quantized and `cost()` skips five quantize calls.
    input_rate: Decimal = field(init=False, repr=False, compare=False)
    cached_input_rate: Decimal = field(init=False, repr=False, compare=False)
    cache_write_rate: Decimal = field(init=False, repr=False, compare=False)
    output_rate: Decimal = field(init=False, repr=False, compare=False)
    nano_exact: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        kinds = ("input", "cached_input", "cache_write", "output")
        # scaleb only moves the exponent: exact, no rounding.
        rates = [getattr(self, kind).scaleb(_PER_TOKEN, DECIMAL_CONTEXT) for kind in kinds]
        nano = [quantize_usd(rate) for rate in rates]
        exact = all(q == r for q, r in zip(nano, rates, strict=True))
        for kind, rate in zip(kinds, nano if exact else rates, strict=True):
            object.__setattr__(self, f"{kind}_rate", rate)
        object.__setattr__(self, "nano_exact", exact)


@dataclass(frozen=True, slots=True)
class Cost:
    """The computed cost of one LLM call under one pricing table version.

    `usd` is the exact sum of the four parts, then quantized to 9 places (the parts are
    quantized separately, so in general they may differ from `usd` in the last place; with
    every price in the shipped tables having at most 3 decimals per 1M tokens, all figures
    are exact). `priced` is False when the provider or model is not in the table; `usd` is
    then 0 and the event must be reported as unpriced, not as free.
    """

    usd: Decimal
    pricing_version: str
    priced: bool
    priced_as: str | None = None
    """The table row that priced the call (e.g. `gpt-5-mini` for `gpt-5-mini-2025-08-07`)."""
    input_usd: Decimal = ZERO_USD
    """Uncached input: input - cached_input - cache_write tokens, at the input rate."""
    cached_input_usd: Decimal = ZERO_USD
    cache_write_usd: Decimal = ZERO_USD
    output_usd: Decimal = ZERO_USD
    """All output tokens, reasoning included (they are a subset of output_tokens)."""
    fallback: str | None = None
    """Set when the price is a fallback, not the model's own: the undated model whose price
    was used for a dated snapshot the price data does not list (`PriceSource.fallback`)."""
