"""Money in integer nano-dollars: the unit budgets and spend windows compare in."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

NANO_PER_USD = 1_000_000_000


def usd_to_nano(cost_usd: Decimal | float) -> int:
    """USD (the pricing table's Decimal, or a float) to integer nano-dollars, rounding half
    to even below a nano-dollar (the pricing table already quantizes to 1e-9)."""
    if type(cost_usd) is Decimal:
        scaled = cost_usd.scaleb(9)  # exact: only the exponent moves
        whole = int(scaled)
        # int() truncates; a quantized cost is whole already (the common, cheap case)
        return whole if whole == scaled else int(scaled.to_integral_value(ROUND_HALF_EVEN))
    return round(cost_usd * NANO_PER_USD)


def nano_to_usd(nano: int) -> Decimal:
    """Integer nano-dollars to an exact Decimal with 9 places (ClickHouse `Decimal(18, 9)`)."""
    return Decimal(nano).scaleb(-9)
