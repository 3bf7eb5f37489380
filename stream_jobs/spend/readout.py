"""Read spend out of a persisted `SpendJob` state value, without a `SpendJob`.

The stream jobs keep one value per tenant in the faust table `spend` (its changelog topic is
`<app_id>-spend-changelog`, key = the tenant id as JSON, value = `SpendJob.to_state(tenant)`
as JSON). Operators and the fault-injection tests read totals straight from that value:

    {"ledger": {"v": 1, "p": partition, "o": offset, "wm": watermark_us,
                "w": [[kind, tz, start_us, end_us, label,
                       [[dimension, key, nano, tokens, calls, dirty], ...]], ...]},
     "budgets": {...} | None}

Only the windows the ledger still retains are in it (a window is dropped once the tenant's
event-time watermark passes its end plus the grace period). Keys `partition:<n>` hold
global-budget partials, not a tenant: they have no `ledger` and read as empty.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from stream_jobs.spend.types import nano_to_usd

__all__ = ["SpendCell", "applied_position", "spend_cells", "tenant_totals"]


@dataclass(frozen=True, slots=True)
class SpendCell:
    """Spend of one (dimension, key) in one retained window of one tenant."""

    window_kind: str
    timezone: str
    window: str
    """The window's label, e.g. `day:2026-11-21`."""
    dimension: str
    """`tenant`, `user`, `agent` or `model`."""
    key: str
    cost_usd: Decimal
    tokens: int
    calls: int


def _ledger(state: Mapping[str, Any]) -> Mapping[str, Any] | None:
    ledger = state.get("ledger")
    if ledger is None:
        return None
    if ledger.get("v") != 1:
        raise ValueError(f"unknown spend ledger state version {ledger.get('v')!r}")
    return ledger  # type: ignore[no-any-return]


def spend_cells(state: Mapping[str, Any]) -> list[SpendCell]:
    """Every cell of every retained window in one tenant's state, in stored order."""
    ledger = _ledger(state)
    if ledger is None:
        return []
    return [
        SpendCell(kind, tz, label, dim, key, nano_to_usd(nano), tokens, calls)
        for kind, tz, _start, _end, label, cells in ledger["w"]
        for dim, key, nano, tokens, calls, _dirty in cells
    ]


def tenant_totals(state: Mapping[str, Any], *, timezone: str = "UTC") -> dict[str, Decimal]:
    """Window label → the tenant's total spend in that window (windows of `timezone` only:
    a budget in another timezone has its own windows, whose labels may look the same)."""
    return {
        c.window: c.cost_usd
        for c in spend_cells(state)
        if c.dimension == "tenant" and c.timezone == timezone
    }


def applied_position(state: Mapping[str, Any]) -> tuple[int, int] | None:
    """(source partition, offset) of the last event the state includes; None if none."""
    ledger = _ledger(state)
    if ledger is None or ledger["p"] < 0:
        return None
    return int(ledger["p"]), int(ledger["o"])
