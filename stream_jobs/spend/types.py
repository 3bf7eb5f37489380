"""Value types shared by the ledger, the budget evaluator and the global combiner."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar

# Moved to the contract (the SDK's request ceiling needs them); re-exported here.
from agentaudit_schemas.money import NANO_PER_USD, nano_to_usd, usd_to_nano
from stream_jobs.spend.windows import Window

__all__ = ["NANO_PER_USD", "SpendUpdate", "SpendWindow", "nano_to_usd", "usd_to_nano"]


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
        "dimension",
        "tenant_id",
        "key",
        "window_kind",
        "timezone",
        "window",
        "window_start",
        "window_end",
        "cost_usd",
        "tokens",
        "calls",
        "as_of_partition",
        "as_of_offset",
    )

    def as_row(self) -> tuple[Any, ...]:
        """Values in `COLUMNS` order, for a ClickHouse insert."""
        return tuple(getattr(self, name) for name in self.COLUMNS)
