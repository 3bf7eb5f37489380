"""`agentaudit status` with one partition stuck while another flows: the newest insert overall
is seconds old, so only a per-partition judgement sees the waiting events (marked `faults` by
tests/faults/conftest.py: a sink's group join costs ~8 s; the judgement's fast case is
tests/unit/health/test_status_judge.py)."""

from __future__ import annotations

import asyncio

from agentaudit.broker import ensure_topics
from agentaudit.health.status import gather, judge
from agentaudit.settings import Settings
from agentaudit.store import open_store
from agentaudit.store.migrations import migrate
from agentaudit_sdk.clock import utc_now
from tests.factories import event_dict, wire
from tests.integration.helpers import produce_placed, sink_until


async def test_status_names_a_stuck_partition_while_another_flows(settings: Settings) -> None:
    """Partition 0's events are stored while partition 1's wait unstored: before, status said
    'writer ok' and exited 0."""
    settings = settings.model_copy(update={"stream_jobs": False, "checkpoint_interval_s": 0})
    await ensure_topics(settings)
    with open_store(settings) as store:  # this process owns the store, as a worker would
        migrate(store)
        await produce_placed(settings, [(0, b"acme", wire(event_dict("acme"))) for _ in range(5)])
        await sink_until(settings, store, lambda w: w.processor.counters.accepted == 5)
        await produce_placed(settings, [(1, b"acme", wire(event_dict("acme"))) for _ in range(7)])
        # gather runs its own event loop (as the CLI does)
        report = judge(settings, await asyncio.to_thread(gather, settings, utc_now()))
    writer = next(c for c in report.checks if c.name == "writer")
    assert report.exit_code == 1 and writer.state.value == "degraded", writer
    assert writer.detail.startswith("partition 1 stuck: 7 events wait"), writer.detail
    assert report.observed.figures is not None
    assert set(report.observed.figures.inserts.by_partition or {}) == {0}
