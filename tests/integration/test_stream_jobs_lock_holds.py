"""A backlog is applied in runs of at most one poll's records, the timer work between them.

The agent applied a whole take (up to 16 polls of 5,000 records) at once under the
processing lock; the timer, which beats the heartbeat and lifts blocks by time, waited the
whole while: 80k events took 17 s on a loaded 2-core box, past the 15 s after which the SDK
takes its kill-switch view for stale (fail-closed tenants are then refused).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from agentaudit.broker import ensure_topics
from agentaudit.settings import Settings
from stream_jobs.app import HOLD_MAX_EVENTS, StreamJobsApp
from stream_jobs.jobs import Record
from stream_jobs.runtime import running
from tests.factories import event_dict, wire
from tests.helpers_wait import poll_until
from tests.integration.helpers import produce_raw

pytestmark = [pytest.mark.integration, pytest.mark.faults]  # ~15 s: a backlog of 25k events
TENANT = "acme-backlog"
BACKLOG = 25_000


async def test_a_backlog_is_applied_in_runs_of_at_most_one_poll(settings: Settings) -> None:
    await ensure_topics(settings)
    event = event_dict(TENANT, "tool_call")
    docs = [wire({**event, "event_id": event_dict()["event_id"]}) for _ in range(BACKLOG)]
    await produce_raw(settings, [(TENANT.encode(), d) for d in docs])
    jobs = StreamJobsApp(settings, app_id=f"jobs-{settings.consumer_group}")
    sizes: list[int] = []
    process = jobs.jobs.process

    def counted(partition: int, items: Any, now: datetime) -> list[Record]:
        batch = list(items)
        sizes.append(len(batch))
        return process(partition, batch, now)

    jobs.jobs.process = counted  # type: ignore[method-assign]
    async with running(jobs.app, timeout=90):
        await poll_until(lambda: jobs.jobs.counters.handled >= BACKLOG, 60, "the backlog applied")
    assert sum(sizes) == BACKLOG
    assert max(sizes) <= HOLD_MAX_EVENTS, sizes
