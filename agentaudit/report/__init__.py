"""`agentaudit report`: one self-contained HTML page of what the store holds over a time
range: spend over time and by model, budget burn, alerts, breakers, drift, dead letters.

`build_report` is deterministic: the same store, range, budgets and `now` give the same
bytes (nothing reads the clock; every query has a total order; no generated ids).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from agentaudit.report.burn import burn
from agentaudit.report.data import Range, first_event, read
from agentaudit.report.page import render
from agentaudit.store.protocol import Store
from agentaudit_schemas.budgets import Budget

__all__ = ["DEFAULT_SPAN", "build_report", "report_range"]

DEFAULT_SPAN = timedelta(hours=24)


def report_range(
    store: Store, now: datetime, since: datetime | None, until: datetime | None, tenant: str | None
) -> Range:
    """The range a report covers: until `until` (default `now`), from `since` (default 24 h
    before, moved forward to the hour of the first stored event when that is later, so a
    young store is not drawn as a day of nothing). Raises ValueError for an empty range."""
    end = (until or now).astimezone(UTC)
    if since is None:
        start = end - DEFAULT_SPAN
        first = first_event(store, tenant)
        if first is not None and start < first < end:
            start = first.replace(minute=0, second=0, microsecond=0)
    else:
        start = since.astimezone(UTC)
    if start >= end:
        raise ValueError(
            f"the report's range is empty: since {start.isoformat()} is not before "
            f"until {end.isoformat()}"
        )
    return Range(start, end, tenant)


def build_report(
    store: Store,
    *,
    now: datetime,
    store_name: str,
    budgets: Sequence[Budget] | None,
    budgets_note: str = "",
    since: datetime | None = None,
    until: datetime | None = None,
    tenant: str | None = None,
) -> str:
    """The report's HTML. `budgets` None means they could not be read (`budgets_note` says
    why, and the page says so); `budgets_note` otherwise names where they came from."""
    rng = report_range(store, now, since, until, tenant)
    data = read(store, rng, store_name, now.astimezone(UTC))
    data.budgets_note = budgets_note
    if budgets is not None:
        data.burns = burn(store, budgets, rng.until, tenant)
    return render(data)
