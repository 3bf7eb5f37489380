"""Calendar windows: edges, month boundaries, DST days, labels."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from agentaudit_schemas.budgets import WindowKind
from stream_jobs.spend.windows import Calendar, CalendarCache, epoch_us, from_epoch_us, window_at

HOUR, DAY, MONTH = WindowKind.HOUR, WindowKind.DAY, WindowKind.MONTH
LAST = 999_999  # the last microsecond of a second


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)


@pytest.mark.parametrize(
    ("kind", "last", "first_next", "label", "next_label"),
    [
        (
            HOUR,
            utc(2026, 11, 21, 10, 59, 59, LAST),
            utc(2026, 11, 21, 11),
            "hour:2026-11-21T10",
            "hour:2026-11-21T11",
        ),
        (
            DAY,
            utc(2026, 11, 21, 23, 59, 59, LAST),
            utc(2026, 11, 22),
            "day:2026-11-21",
            "day:2026-11-22",
        ),
        (
            MONTH,
            utc(2026, 1, 31, 23, 59, 59, LAST),
            utc(2026, 2, 1),
            "month:2026-01",
            "month:2026-02",
        ),
        (
            MONTH,
            utc(2026, 12, 31, 23, 59, 59, LAST),
            utc(2027, 1, 1),
            "month:2026-12",
            "month:2027-01",
        ),
        (
            DAY,
            utc(2028, 2, 29, 23, 59, 59, LAST),
            utc(2028, 3, 1),
            "day:2028-02-29",
            "day:2028-03-01",
        ),
    ],
)
def test_last_microsecond_and_next_window(
    kind: WindowKind, last: datetime, first_next: datetime, label: str, next_label: str
) -> None:
    w = window_at(last, Calendar(kind))
    nxt = window_at(first_next, Calendar(kind))
    assert (w.label, nxt.label) == (label, next_label)
    assert w.end == nxt.start == first_next
    assert w.contains(last) and not w.contains(first_next)
    assert nxt.contains(first_next) and not nxt.contains(last)


def test_leap_february_is_29_days_and_common_one_28() -> None:
    leap = window_at(utc(2028, 2, 29, 12), Calendar(MONTH))
    common = window_at(utc(2027, 2, 15), Calendar(MONTH))
    assert (leap.label, leap.start, leap.end) == ("month:2028-02", utc(2028, 2, 1), utc(2028, 3, 1))
    assert leap.end - leap.start == timedelta(days=29)
    assert common.end - common.start == timedelta(days=28)


@pytest.mark.parametrize(
    ("tz", "day", "hours", "start"),
    [
        ("Europe/Berlin", "2026-03-29", 23, utc(2026, 3, 28, 23)),  # spring forward
        ("Europe/Berlin", "2026-10-25", 25, utc(2026, 10, 24, 22)),  # fall back
        ("Europe/Berlin", "2026-11-21", 24, utc(2026, 11, 20, 23)),
        ("America/New_York", "2026-03-08", 23, utc(2026, 3, 8, 5)),
        ("America/New_York", "2026-11-01", 25, utc(2026, 11, 1, 4)),
    ],
)
def test_dst_days_are_23_or_25_hours(tz: str, day: str, hours: int, start: datetime) -> None:
    noon = datetime.fromisoformat(f"{day}T12:00").replace(tzinfo=ZoneInfo(tz))
    w = window_at(noon, Calendar(DAY, tz))
    assert w.label == f"day:{day}"
    assert w.start == start
    assert w.end - w.start == timedelta(hours=hours)
    assert w.start.tzinfo is UTC and w.end.tzinfo is UTC


def test_local_day_label_differs_from_utc_date() -> None:
    at = utc(2026, 11, 21, 23, 30)  # already the 22nd in Berlin, still the 21st in New York
    assert window_at(at, Calendar(DAY, "Europe/Berlin")).label == "day:2026-11-22"
    assert window_at(at, Calendar(DAY, "America/New_York")).label == "day:2026-11-21"
    assert window_at(at, Calendar(DAY)).label == "day:2026-11-21"


def test_month_in_a_timezone_starts_at_local_midnight() -> None:
    w = window_at(utc(2026, 10, 31, 23, 30), Calendar(MONTH, "Europe/Berlin"))
    # 00:30 on 1 November in Berlin (CET, +01:00): November, starting 23:00 UTC on 31 October
    assert (w.label, w.start, w.end) == (
        "month:2026-11",
        utc(2026, 10, 31, 23),
        utc(2026, 11, 30, 23),
    )
    october = window_at(utc(2026, 10, 15), Calendar(MONTH, "Europe/Berlin"))
    # October has the fall-back night: 31 days + 1 hour
    assert october.end - october.start == timedelta(days=31, hours=1)


def test_fall_back_hour_happens_twice_with_distinct_labels() -> None:
    cal = Calendar(HOUR, "Europe/Berlin")
    first = window_at(utc(2026, 10, 25, 0, 30), cal)
    second = window_at(utc(2026, 10, 25, 1, 30), cal)
    assert first.label == "hour:2026-10-25T02+02:00"
    assert second.label == "hour:2026-10-25T02+01:00"
    assert first.end == second.start == utc(2026, 10, 25, 1)


def test_spring_forward_skips_the_missing_hour() -> None:
    cal = Calendar(HOUR, "America/New_York")
    before = window_at(utc(2026, 3, 8, 6, 59), cal)  # 01:59 EST
    after = window_at(utc(2026, 3, 8, 7), cal)  # 03:00 EDT
    assert before.label == "hour:2026-03-08T01-05:00"
    assert after.label == "hour:2026-03-08T03-04:00"
    assert before.end == after.start


def test_missing_local_midnight_starts_the_day_at_the_transition() -> None:
    # Havana springs forward at 00:00: 8 March 2026 begins at 01:00 local = 05:00 UTC.
    w = window_at(utc(2026, 3, 8, 12), Calendar(DAY, "America/Havana"))
    prev = window_at(utc(2026, 3, 7, 12), Calendar(DAY, "America/Havana"))
    assert w.start == prev.end == utc(2026, 3, 8, 5)
    assert w.end - w.start == timedelta(hours=23)


@pytest.mark.parametrize(
    "tz", ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe"]
)
@pytest.mark.parametrize("kind", list(WindowKind))
def test_windows_tile_the_year_without_gaps_or_overlaps(tz: str, kind: WindowKind) -> None:
    cal = Calendar(kind, tz)
    step = timedelta(minutes=7) if kind is HOUR else timedelta(minutes=53)
    t, end = utc(2026, 3, 25), utc(2026, 4, 8)  # spans the spring DST shifts (and Lord Howe's)
    t2 = utc(2026, 10, 1)
    prev = None
    for start, stop in ((t, end), (t2, t2 + timedelta(days=36))):
        prev = None
        t = start
        while t < stop:
            w = window_at(t, cal)
            assert w.contains(t), (t, w)
            if prev is not None and prev.label != w.label:
                assert prev.end == w.start, (prev, w)
                assert prev.end - prev.start <= timedelta(days=32)
            prev = w
            t += step


def test_half_hour_dst_shift_gives_a_30_minute_hour() -> None:
    # Lord Howe Island moves from +10:30 to +11:00 at 02:00 local on 4 October 2026.
    w = window_at(utc(2026, 10, 3, 15, 45), Calendar(HOUR, "Australia/Lord_Howe"))
    assert (w.start, w.end) == (utc(2026, 10, 3, 15, 30), utc(2026, 10, 3, 16))


def test_cache_returns_the_same_window_object_and_handles_interleaving() -> None:
    cache = CalendarCache(Calendar(HOUR))
    a = cache.get(utc(2026, 11, 21, 10, 59, 59))
    b = cache.get(utc(2026, 11, 21, 11, 0, 1))
    assert cache.get(utc(2026, 11, 21, 10, 30)) is a
    assert cache.get(utc(2026, 11, 21, 11, 30)) is b
    assert cache.get(utc(2026, 11, 21, 12)).label == "hour:2026-11-21T12"
    assert cache.get(utc(2026, 11, 21, 10, 1)).label == "hour:2026-11-21T10"


def test_aware_non_utc_input_is_the_same_instant() -> None:
    berlin = datetime(2026, 11, 21, 0, 30, tzinfo=ZoneInfo("Europe/Berlin"))
    assert window_at(berlin, Calendar(DAY)).label == "day:2026-11-20"


def test_epoch_us_round_trips_exactly() -> None:
    at = utc(2026, 11, 21, 10, 59, 59, 999999)
    assert from_epoch_us(epoch_us(at)) == at
    assert epoch_us(utc(1970, 1, 1, 0, 0, 0, 1)) == 1
