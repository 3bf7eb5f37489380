"""Global spend (all tenants together) in a partitioned deployment.

No worker sees every tenant: events are keyed by tenant, so each worker owns some source
partitions. The global total is built in two steps:

1. Each worker keeps, per source partition it owns, the partial sum of all spend in that
   partition for every calendar a global budget uses (`PartitionSpend`, inside the
   `SpendTracker`; its state is one table key per partition, `partition:<n>`). After each
   batch it publishes `drain()`'s `GlobalPartial`s: *cumulative* snapshots tagged with the
   last applied source offset, to a single-partition topic.
2. One aggregator consumes that topic; `GlobalSpendCombiner.merge` keeps the newest
   snapshot per (window, partition) by offset and sums across partitions, then the
   `BudgetEvaluator` (holding the global budgets) evaluates the resulting `SpendUpdate`.

Snapshots instead of deltas make every step idempotent: a replayed or re-published partial
carries an offset at or below the one kept and changes nothing, and a partition whose
worker restarted re-derives the same snapshot at the same offset.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from agentaudit_schemas.budgets import WindowKind
from stream_jobs.keyed_state import KeyedState
from stream_jobs.spend.types import SpendUpdate
from stream_jobs.spend.windows import Calendar, CalendarCache, Window, epoch_us, from_epoch_us

_FAR_PAST = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class GlobalPartial:
    """Cumulative spend of one source partition in one window, as of `as_of_offset`."""

    partition: int
    window: Window
    cost_nano: int
    tokens: int
    calls: int
    as_of_offset: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form for the partials topic."""
        w = self.window
        return {
            "partition": self.partition,
            "kind": w.calendar.kind.value,
            "tz": w.calendar.tz,
            "label": w.label,
            "start_us": epoch_us(w.start),
            "end_us": epoch_us(w.end),
            "cost_nano": self.cost_nano,
            "tokens": self.tokens,
            "calls": self.calls,
            "as_of_offset": self.as_of_offset,
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> GlobalPartial:
        cal = Calendar(WindowKind(doc["kind"]), doc["tz"])
        window = Window(
            cal, doc["label"], from_epoch_us(doc["start_us"]), from_epoch_us(doc["end_us"])
        )
        return cls(
            doc["partition"],
            window,
            doc["cost_nano"],
            doc["tokens"],
            doc["calls"],
            doc["as_of_offset"],
        )


class _Part:
    __slots__ = ("dirty", "hi", "lo", "offset", "opens", "pending", "watermark", "windows")

    def __init__(self) -> None:
        self.offset = -1
        self.watermark = _FAR_PAST
        # calendar → window start → [window, nano, tokens, calls, dirty]
        self.windows: dict[Calendar, dict[datetime, list[Any]]] = {}
        self.dirty = False
        # Epoch (as in the ledger): spend inside [lo, hi) is summed in `pending` and folded
        # into `opens`, the epoch's cell per calendar, when the epoch ends or is read.
        self.lo = self.hi = _FAR_PAST
        self.opens: list[list[Any]] = []
        self.pending = [0, 0, 0]


class PartitionSpend(KeyedState[int]):
    """Per source partition partial sums of all tenants' spend, replay-safe by offset."""

    def __init__(self, *, grace: timedelta, max_skew: timedelta) -> None:
        self.grace = grace
        self.max_skew = max_skew
        self._caches: list[CalendarCache] = []
        self._parts: dict[int, _Part] = {}
        self._dirty: set[int] = set()
        self.active = False
        """True once a global budget needs partials: the ledger skips all of this otherwise."""

    def add_calendar(self, calendar: Calendar) -> None:
        if all(c.calendar != calendar for c in self._caches):
            for part in self._parts.values():
                self._fold(part)
                part.lo = part.hi = _FAR_PAST
            self._caches.append(CalendarCache(calendar))
            self.active = True

    def applied(self, partition: int, offset: int) -> bool:
        """True if `offset` of `partition` is already in the partials."""
        part = self._parts.get(partition)
        return part is not None and offset <= part.offset

    def observe(
        self, partition: int, offset: int, at: datetime, nano: int, tokens: int, now: datetime
    ) -> None:
        part = self._parts.get(partition)
        if part is None:
            part = self._parts[partition] = _Part()
        elif offset <= part.offset:
            return
        part.offset = offset
        part.dirty = True
        self._dirty.add(partition)
        if part.lo <= at < part.hi:
            pending = part.pending
            pending[0] += nano
            pending[1] += tokens
            pending[2] += 1
            return
        self._fold(part)
        newer = at >= part.hi and at <= now + self.max_skew
        if newer and at > part.watermark:
            part.watermark = at
        cells = []
        for cache in self._caches:
            window = cache.get(at)
            by_start = part.windows.setdefault(cache.calendar, {})
            cell = by_start.get(window.start)
            if cell is None:
                if window.end + self.grace <= part.watermark:
                    newer = False  # too late for this window: its partial is final
                    continue
                cell = by_start[window.start] = [window, 0, 0, 0, False]
            cells.append(cell)
        if newer:
            part.opens = cells
            part.lo = max(c[0].start for c in cells)
            part.hi = min(c[0].end for c in cells)
            part.pending = [nano, tokens, 1]
        else:  # late, or from a clock far ahead: straight into its windows
            for cell in cells:
                cell[1] += nano
                cell[2] += tokens
                cell[3] += 1
                cell[4] = True

    @staticmethod
    def _fold(part: _Part) -> None:
        n, t, c = part.pending
        if c:
            for cell in part.opens:
                cell[1] += n
                cell[2] += t
                cell[3] += c
                cell[4] = True
            part.pending = [0, 0, 0]

    def drain(self) -> list[GlobalPartial]:
        """Snapshots changed since the last drain (publish them); expires old windows."""
        out: list[GlobalPartial] = []
        for partition, part in self._parts.items():
            if not part.dirty:
                continue
            part.dirty = False
            self._fold(part)
            for by_start in part.windows.values():
                for start, cell in list(by_start.items()):
                    if cell[4]:
                        cell[4] = False
                        out.append(
                            GlobalPartial(
                                partition, cell[0], cell[1], cell[2], cell[3], part.offset
                            )
                        )
                    elif cell[0].end + self.grace <= part.watermark:
                        del by_start[start]
                        if any(cell is o for o in part.opens):
                            part.lo = part.hi = _FAR_PAST
        return out

    def pop_dirty(self) -> set[int]:
        """Partitions whose state changed since the last call."""
        dirty, self._dirty = self._dirty, set()
        return dirty

    def forget(self, partition: int) -> None:
        self._parts.pop(partition, None)

    def to_state(self, partition: int) -> dict[str, Any] | None:
        part = self._parts.get(partition)
        if part is None:
            return None
        self._fold(part)
        cells = [
            [
                c[0].calendar.kind.value,
                c[0].calendar.tz,
                c[0].label,
                epoch_us(c[0].start),
                epoch_us(c[0].end),
                c[1],
                c[2],
                c[3],
                int(c[4]),
            ]
            for by_start in part.windows.values()
            for c in by_start.values()
        ]
        return {"v": 1, "o": part.offset, "wm": epoch_us(part.watermark), "w": cells}

    def from_state(self, partition: int, doc: dict[str, Any]) -> None:
        part = _Part()
        part.offset, part.watermark = doc["o"], from_epoch_us(doc["wm"])
        for kind, tz, label, start_us, end_us, nano, tokens, calls, dirty in doc["w"]:
            cal = Calendar(WindowKind(kind), tz)
            window = Window(cal, label, from_epoch_us(start_us), from_epoch_us(end_us))
            part.windows.setdefault(cal, {})[window.start] = [
                window,
                nano,
                tokens,
                calls,
                bool(dirty),
            ]
            part.dirty = part.dirty or bool(dirty)
        self._parts[partition] = part


def combine_partials(partials: Iterable[GlobalPartial]) -> dict[Window, tuple[int, int, int]]:
    """Global (nano, tokens, calls) per window from any pile of partials, duplicates and
    stale ones included: the newest snapshot per (window, partition) wins."""
    newest: dict[tuple[Window, int], GlobalPartial] = {}
    for p in partials:
        kept = newest.get((p.window, p.partition))
        if kept is None or p.as_of_offset > kept.as_of_offset:
            newest[(p.window, p.partition)] = p
    totals: dict[Window, tuple[int, int, int]] = {}
    for (window, _), p in newest.items():
        n, t, c = totals.get(window, (0, 0, 0))
        totals[window] = (n + p.cost_nano, t + p.tokens, c + p.calls)
    return totals


class GlobalSpendCombiner:
    """The aggregator's state: newest partial per (window, partition); JSON state via
    `to_state`/`from_state` (one table key)."""

    def __init__(self, *, grace: timedelta = timedelta(hours=1)) -> None:
        self.grace = grace
        self._windows: dict[Window, dict[int, tuple[int, int, int, int]]] = {}

    def merge(self, partial: GlobalPartial) -> SpendUpdate | None:
        """Fold one partial in; the new global total of its window, or None if stale."""
        parts = self._windows.setdefault(partial.window, {})
        kept = parts.get(partial.partition)
        if kept is not None and partial.as_of_offset <= kept[0]:
            return None
        parts[partial.partition] = (
            partial.as_of_offset,
            partial.cost_nano,
            partial.tokens,
            partial.calls,
        )
        nano = sum(v[1] for v in parts.values())
        tokens = sum(v[2] for v in parts.values())
        calls = sum(v[3] for v in parts.values())
        return SpendUpdate("global", "*", "*", partial.window, nano, tokens, calls)

    def latest(self, calendar: Calendar) -> SpendUpdate | None:
        """The global total of the newest window of `calendar` seen so far."""
        windows = [w for w in self._windows if w.calendar == calendar]
        if not windows:
            return None
        window = max(windows, key=lambda w: w.start)
        parts = self._windows[window].values()
        return SpendUpdate(
            "global",
            "*",
            "*",
            window,
            sum(v[1] for v in parts),
            sum(v[2] for v in parts),
            sum(v[3] for v in parts),
        )

    def expire(self, now: datetime) -> None:
        """Forget windows that ended more than `grace` ago."""
        for window in [w for w in self._windows if w.end + self.grace <= now]:
            del self._windows[window]

    def to_state(self) -> dict[str, Any]:
        rows = [
            [
                w.calendar.kind.value,
                w.calendar.tz,
                w.label,
                epoch_us(w.start),
                epoch_us(w.end),
                [[p, *v] for p, v in parts.items()],
            ]
            for w, parts in self._windows.items()
        ]
        return {"v": 1, "w": rows}

    def from_state(self, doc: dict[str, Any]) -> None:
        self._windows = {}
        for kind, tz, label, start_us, end_us, parts in doc["w"]:
            cal = Calendar(WindowKind(kind), tz)
            window = Window(cal, label, from_epoch_us(start_us), from_epoch_us(end_us))
            self._windows[window] = {p: (o, n, t, c) for p, o, n, t, c in parts}
