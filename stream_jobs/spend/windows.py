"""Calendar windows (hour, day, month) in a timezone, as UTC instants.

A window is `[start, end)`: `start` inclusive, `end` exclusive, both UTC. Days and months
follow the local calendar of the budget's timezone, so a day is 23 or 25 hours long on DST
days, and its label is the *local* date (`day:2026-11-21`, `month:2026-11`). Hours are
local clock hours; in a zone other than UTC the label carries the UTC offset, because on a
fall-back night the same local hour happens twice (`hour:2026-10-25T02+02:00`, then
`hour:2026-10-25T02+01:00`); in UTC it is `hour:2026-11-21T10`.

A local midnight that does not exist (a zone that springs forward at 00:00, e.g.
America/Havana) starts the day at the transition; an ambiguous one starts it at its first
occurrence. `CalendarCache` makes the per-event lookup two datetime comparisons.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import NamedTuple
from zoneinfo import ZoneInfo

from agentaudit_schemas.budgets import WindowKind

_HOUR = timedelta(hours=1)


class Calendar(NamedTuple):
    """A window kind in a timezone: what a budget (or a rollup) counts over."""

    kind: WindowKind
    tz: str = "UTC"


@dataclass(frozen=True, slots=True)
class Window:
    """One calendar window: `[start, end)` in UTC, labelled in the calendar's local time."""

    calendar: Calendar
    label: str
    start: datetime
    end: datetime

    def contains(self, at: datetime) -> bool:
        return self.start <= at < self.end


@lru_cache(maxsize=256)
def _zone(tz: str) -> ZoneInfo | None:
    """None for UTC: the fast path skips zone conversion entirely."""
    return None if tz == "UTC" else ZoneInfo(tz)


def _local_midnight(day: date, zone: ZoneInfo | None) -> datetime:
    # fold=0: a missing midnight resolves with the pre-transition offset, which lands exactly
    # on the transition instant; an ambiguous one resolves to its first occurrence.
    return datetime(day.year, day.month, day.day, tzinfo=zone or UTC).astimezone(UTC)


def _floor_hour(at: datetime, zone: ZoneInfo | None) -> tuple[datetime, datetime]:
    """(start of the local clock hour holding `at` in UTC, the same in local time)."""
    local = at.astimezone(zone) if zone else at
    # replace() keeps `fold`, so the second 02:00 of a fall-back night floors to itself.
    local_start = local.replace(minute=0, second=0, microsecond=0)
    return local_start.astimezone(UTC), local_start


def _next_hour(start: datetime, zone: ZoneInfo | None) -> datetime:
    """The next local hour boundary after `start`. With whole-hour DST shifts that is one
    hour later in UTC; flooring that instant also gets 30-minute shifts right."""
    candidate = start + _HOUR
    floor = _floor_hour(candidate, zone)[0]
    return floor if floor > start else candidate


def _offset_suffix(local: datetime) -> str:
    off = local.strftime("%z")  # "+0100"
    return f"{off[:3]}:{off[3:]}"


def window_at(at: datetime, calendar: Calendar) -> Window:
    """The window of `calendar` that contains the instant `at` (an aware datetime)."""
    kind, tz = calendar
    zone = _zone(tz)
    at = at.astimezone(UTC)
    if kind is WindowKind.HOUR:
        start, local_start = _floor_hour(at, zone)
        end = _next_hour(start, zone)
        while end <= at:  # only where DST shifts by 30 minutes (Australia/Lord_Howe)
            start = end
            local_start = start.astimezone(zone) if zone else start
            end = _next_hour(start, zone)
        label = f"hour:{local_start:%Y-%m-%dT%H}"
        if zone is not None:
            label += _offset_suffix(local_start)
        return Window(calendar, label, start, end)
    local_day = (at.astimezone(zone) if zone else at).date()
    if kind is WindowKind.DAY:
        first, after = local_day, local_day + timedelta(days=1)
        label = f"day:{local_day.isoformat()}"
    elif kind is WindowKind.MONTH:
        first = local_day.replace(day=1)
        after = (
            date(first.year + 1, 1, 1)
            if first.month == 12
            else first.replace(month=first.month + 1)
        )
        label = f"month:{first.year:04d}-{first.month:02d}"
    else:  # pragma: no cover - WindowKind is closed
        raise ValueError(f"unknown window kind {kind!r}")
    return Window(calendar, label, _local_midnight(first, zone), _local_midnight(after, zone))


class CalendarCache:
    """Per-calendar memo of the last two windows seen: events arrive roughly in time order,
    so nearly every lookup is a hit; two entries absorb interleaving around a boundary."""

    __slots__ = ("_last", "_prev", "calendar")

    def __init__(self, calendar: Calendar) -> None:
        self.calendar = calendar
        self._last: Window | None = None
        self._prev: Window | None = None

    def get(self, at: datetime) -> Window:
        """The window containing `at`; returns the same object for repeated hits."""
        last = self._last
        if last is not None and last.start <= at < last.end:
            return last
        prev = self._prev
        if prev is not None and prev.start <= at < prev.end:
            return prev
        window = window_at(at, self.calendar)
        self._prev, self._last = last, window
        return window


def epoch_us(at: datetime) -> int:
    """Microseconds since the Unix epoch: the state encoding of an instant (exact, JSON-safe)."""
    return (at - _EPOCH) // _MICRO


def from_epoch_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)
