"""A re-sent event at the tail of what a worker committed is counted once after a restart.

The state is written and the offsets committed together (`commit_guard`), but a re-sent or
invalid message changes no tenant's state, so the restored position (the last applied
event) lagged the committed offset. The delivery fence took the first batch after the
restart for a hole and sought back into those handled messages; the jobs' recent ids are
in memory only, so the re-sent copy was counted as a new event: spend counted it twice.
"""

from __future__ import annotations

from typing import Any

import pytest

from agentaudit.broker import ensure_topics
from agentaudit.settings import Settings
from stream_jobs.app import StreamJobsApp
from stream_jobs.runtime import running
from tests.factories import event_dict, wire
from tests.helpers_wait import poll_until
from tests.integration.helpers import produce_raw

pytestmark = pytest.mark.integration
TENANT = "acme-resent"


def _calls(jobs: StreamJobsApp) -> int:
    state: Any = jobs.jobs.spend.to_state(TENANT)
    cells = [
        c for *_, label, cells in state["ledger"]["w"] if label.startswith("month") for c in cells
    ]
    return next(c[4] for c in cells if c[0] == "tenant")


def _committed(jobs: StreamJobsApp) -> int:
    consumer = jobs.app.consumer
    return max((consumer.committed_offset(tp) or 0) for tp in consumer.assignment())


async def test_a_re_sent_event_before_the_commit_counts_once_after_a_restart(
    settings: Settings,
) -> None:
    await ensure_topics(settings)
    event = wire(event_dict(TENANT, "llm_call"))
    app_id = f"jobs-{settings.consumer_group}"
    await produce_raw(settings, [(TENANT.encode(), event), (TENANT.encode(), event)])
    first = StreamJobsApp(settings, app_id=app_id)
    async with running(first.app, timeout=60):
        await poll_until(lambda: first.jobs.counters.handled >= 2, 30, "both copies handled")
        await poll_until(lambda: _committed(first) >= 2, 30, "both offsets committed")
    assert (first.jobs.counters.events, first.jobs.counters.duplicates) == (1, 1)

    await produce_raw(settings, [(TENANT.encode(), wire(event_dict(TENANT, "llm_call")))])
    second = StreamJobsApp(settings, app_id=app_id)
    async with running(second.app, timeout=60):
        await poll_until(lambda: second.jobs.counters.events >= 1, 30, "the new event applied")
        assert _calls(second) == 2  # the event once, and the new one
        assert second.jobs.counters.events == 1


@pytest.mark.faults  # ~10 s; the fast case: tests/unit/stream_jobs/test_recent_log.py
async def test_a_re_sent_event_after_the_commit_counts_once_after_a_restart(
    settings: Settings,
) -> None:
    """The copy arrives after the restart: the original was applied and committed before it,
    so only remembered ids can tell it is a duplicate (the sink recovers its recent ids from
    the store and stores it once)."""
    await ensure_topics(settings)
    event = wire(event_dict(TENANT, "llm_call"))
    app_id = f"jobs-{settings.consumer_group}"
    await produce_raw(settings, [(TENANT.encode(), event)])
    first = StreamJobsApp(settings, app_id=app_id)
    async with running(first.app, timeout=60):
        await poll_until(lambda: first.jobs.counters.handled >= 1, 30, "the event handled")
        await poll_until(lambda: _committed(first) >= 1, 30, "its offset committed")

    fresh = wire(event_dict(TENANT, "llm_call"))
    await produce_raw(settings, [(TENANT.encode(), event), (TENANT.encode(), fresh)])
    second = StreamJobsApp(settings, app_id=app_id)
    async with running(second.app, timeout=60):
        await poll_until(lambda: second.jobs.counters.handled >= 2, 30, "copy and new handled")
        assert (second.jobs.counters.events, second.jobs.counters.duplicates) == (1, 1)
        assert _calls(second) == 2  # the event once, and the new one
        # the ids live in the jobs' window only, not also in the table's memory
        assert len(second.tables["recent"].data) == 0
