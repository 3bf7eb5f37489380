"""The ledger's per-tenant cells and their JSON state form (see `ledger`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from agentaudit_schemas.budgets import WindowKind
from stream_jobs.spend.windows import Calendar, Window, epoch_us, from_epoch_us

_FAR_PAST = datetime(1970, 1, 1, tzinfo=UTC)


class Open:
    """One retained window of one tenant and calendar: cells `[nano, tokens, calls, dirty]`
    keyed by (dimension, key)."""

    __slots__ = ("cells", "dirty", "window")

    def __init__(self, window: Window) -> None:
        self.window = window
        self.cells: dict[tuple[str, str], list[Any]] = {}
        self.dirty = False

    def add(self, dk: tuple[str, str], nano: int, tokens: int, calls: int) -> None:
        cell = self.cells.get(dk)
        if cell is None:
            self.cells[dk] = [nano, tokens, calls, True]
        else:
            cell[0] += nano
            cell[1] += tokens
            cell[2] += calls
            cell[3] = True
        self.dirty = True


class TenantLedger:
    """One tenant's ledger: replay position, watermark, retained windows and the epoch."""

    __slots__ = ("hi", "lo", "offset", "opens", "partition", "pending", "watermark", "windows")

    def __init__(self) -> None:
        self.partition = -1
        self.offset = -1
        self.watermark = _FAR_PAST
        self.windows: dict[Calendar, dict[datetime, Open]] = {}
        self.lo = self.hi = _FAR_PAST  # empty epoch: the first event opens one
        self.opens: list[Open] = []  # the epoch's window per calendar, in plan order
        self.pending: dict[tuple[str, str], list[int]] = {}  # [nano, tokens, calls, room]


def dump_tenant(state: TenantLedger) -> dict[str, Any]:
    """JSON-safe primitives; pending spend must have been folded into the windows first."""
    windows = [
        [
            cal.kind.value,
            cal.tz,
            epoch_us(o.window.start),
            epoch_us(o.window.end),
            o.window.label,
            [[d, k, *c[:3], int(c[3])] for (d, k), c in o.cells.items()],
        ]
        for cal, by_start in state.windows.items()
        for o in by_start.values()
    ]
    return {
        "v": 1,
        "p": state.partition,
        "o": state.offset,
        "wm": epoch_us(state.watermark),
        "w": windows,
    }


def load_tenant(doc: dict[str, Any]) -> TenantLedger:
    """Inverse of `dump_tenant`. The epoch starts empty: the next event opens one."""
    state = TenantLedger()
    state.partition, state.offset = doc["p"], doc["o"]
    state.watermark = from_epoch_us(doc["wm"])
    for kind, tz, start_us, end_us, label, cells in doc["w"]:
        cal = Calendar(WindowKind(kind), tz)
        opened = Open(Window(cal, label, from_epoch_us(start_us), from_epoch_us(end_us)))
        for dim, key, nano, tokens, calls, dirty in cells:
            opened.cells[(dim, key)] = [nano, tokens, calls, bool(dirty)]
            opened.dirty = opened.dirty or bool(dirty)
        state.windows.setdefault(cal, {})[opened.window.start] = opened
    return state
