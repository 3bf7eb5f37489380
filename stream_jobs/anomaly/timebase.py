"""Event-time arithmetic shared by the anomaly and drift jobs.

Time is counted in whole minutes since the Unix epoch ("minute index"): an int is cheap to
compute per event, hashes and serialises trivially, and makes window maths exact. Weeks
start on Monday 00:00 UTC, so `hour_of_week` 0 is Monday 00:00–01:00.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

MINUTES_PER_HOUR = 60
HOURS_PER_WEEK = 168
# The epoch (1970-01-01) was a Thursday: shift by three days so weeks start on Monday.
_WEEK_SHIFT_HOURS = 72
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def minute_of(at: datetime) -> int:
    """Minute index of a timezone-aware timestamp (floor)."""
    return int(at.timestamp() // 60)


def minute_start(minute: int) -> datetime:
    """UTC start of a minute index."""
    return _EPOCH + timedelta(minutes=minute)


def minute_label(minute: int) -> str:
    """`minute:2026-11-21T10:04`, the alert window label of one minute."""
    return "minute:" + minute_start(minute).strftime("%Y-%m-%dT%H:%M")


def hour_of_week(minute: int) -> int:
    """0..167, Monday 00:00 UTC = 0."""
    return (minute // MINUTES_PER_HOUR + _WEEK_SHIFT_HOURS) % HOURS_PER_WEEK


def week_of(minute: int) -> int:
    """Monotonic week number (Monday-based) of a minute index."""
    return (minute // MINUTES_PER_HOUR + _WEEK_SHIFT_HOURS) // HOURS_PER_WEEK


def window_index(minute: int, size_minutes: int) -> int:
    """Tumbling window a minute falls in; window `w` covers `[w*size, (w+1)*size)` minutes."""
    return minute // size_minutes


def window_label(window: int, size_minutes: int) -> str:
    """`60m:2026-11-21T10:00`, the label of a tumbling window."""
    start = minute_start(window * size_minutes).strftime("%Y-%m-%dT%H:%M")
    return f"{size_minutes}m:{start}"
