"""Value types shared by the ledger, the budget evaluator and the global combiner."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, ClassVar

from stream_jobs.spend.windows import Window

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


@dataclass(slots=True)
class SpendUpdate:
    """The running total of one budget-relevant cell after an event: what budgets evaluate.

    Totals, not increments, so evaluating the same update twice changes nothing.
    `dimension` is `tenant`, `user` or `global`; `key` the tenant id, user id or `*`;
    `tenant_id` is `*` for `global`.
    """

    dimension: str
    tenant_id: str
    key: str
    window: Window
    cost_nano: int
    tokens: int
    calls: int

    @property
    def cost_usd(self) -> float:
        return self.cost_nano / NANO_PER_USD


@dataclass(frozen=True, slots=True)
class SpendWindow:
    """One `spend_window` rollup row: cumulative spend of one key in one window."""

    dimension: str
    tenant_id: str
    key: str
    window_kind: str
    timezone: str
    window: str
    window_start: datetime
    window_end: datetime
    cost_usd: Decimal
    tokens: int
    calls: int
    as_of_partition: int
    as_of_offset: int
    """Source offset the snapshot includes: the version column of a ReplacingMergeTree."""

    COLUMNS: ClassVar[tuple[str, ...]] = (
        "dimension", "tenant_id", "key", "window_kind", "timezone", "window", "window_start",
        "window_end", "cost_usd", "tokens", "calls", "as_of_partition", "as_of_offset",
    )  # fmt: skip

    def as_row(self) -> tuple[Any, ...]:
        """Values in `COLUMNS` order, for a ClickHouse insert."""
        return tuple(getattr(self, name) for name in self.COLUMNS)
