"""A second pipeline on the same broker (another events topic) counts its own events only.

Found from a failure of test_metrics_jobs in `./run faults` (events 37, duplicates 0,
invalid 3 for 30 events, 7 re-sends, 3 junk messages). Every test's worker ran its jobs as
the faust app `agentaudit`: one consumer group and one set of changelog topics for all
pipelines on the session's broker. The jobs restored an earlier test's tables: its spend
states (of any tenant in the same partition) seeded the delivery fence with that test's
offsets, and a re-sent copy at or below them was taken for a replay of its own offset, so
it counted as a new event (since 8bf9443 every message below them counts as a replay); the
tenant's spend came back with the other pipeline's totals, and its ledger skipped the new
events as replays. The same in production for two pipelines
(prod and staging topics, say) on one Kafka cluster. The fast case:
tests/unit/stream_jobs/test_jobs_group.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agentaudit.broker import ensure_topics
from agentaudit.settings import Settings
from stream_jobs.app import StreamJobsApp
from stream_jobs.jobs import JobCounters
from stream_jobs.runtime import running
from stream_jobs.spend.readout import spend_cells
from tests.conftest import isolated_settings
from tests.factories import event_dict, wire
from tests.faults.conftest import FULL
from tests.helpers_wait import poll_until
from tests.integration.helpers import produce_raw

pytestmark = [
    pytest.mark.integration,
    pytest.mark.faults,
    pytest.mark.skipif(not FULL, reason="~15 s, two pipelines' jobs: ./run faults"),
]  # the fast case (the ids and names), in CI: tests/unit/stream_jobs/test_jobs_group.py
TENANT = b"acme"
VALID, RESENT, JUNK = 30, 7, [b"{not json", b'{"tenant_id": "acme"}', b"[1, 2]"]


def _calls(jobs: StreamJobsApp) -> int:
    """The tenant's calls this month, as its spend state says."""
    state: Any = jobs.jobs.spend.to_state(TENANT.decode())
    return sum(
        c.calls
        for c in spend_cells(state)
        if c.dimension == "tenant" and c.window.startswith("month")
    )


def _committed(jobs: StreamJobsApp) -> int:
    consumer = jobs.app.consumer
    return max((consumer.committed_offset(tp) or 0) for tp in consumer.assignment())


async def _run(settings: Settings, messages: list[tuple[bytes, bytes]]) -> tuple[JobCounters, int]:
    """The jobs (default app id) over `messages` until all are handled and committed: their
    counters and the tenant's calls (read while its partition is held)."""
    await ensure_topics(settings)
    await produce_raw(settings, messages)
    jobs = StreamJobsApp(settings)
    async with running(jobs.app, timeout=60):
        await poll_until(
            lambda: jobs.jobs.counters.handled >= len(messages),
            30,
            "every message handled",
            detail=lambda: repr(jobs.jobs.counters),
        )
        await poll_until(lambda: _committed(jobs) >= len(messages), 30, "all committed")
        return jobs.jobs.counters, _calls(jobs)


async def test_a_second_pipeline_counts_its_re_sends_once_and_its_own_spend(
    settings: Settings, tmp_path: Path
) -> None:
    first, calls = await _run(
        settings, [(TENANT, wire(event_dict("acme", "llm_call"))) for _ in range(60)]
    )
    assert (first.events, calls) == (60, 60)

    other = isolated_settings(settings.kafka_bootstrap, tmp_path / "other")  # other topics
    docs = [wire(event_dict("acme", "llm_call")) for _ in range(VALID)]
    messages = [(TENANT, d) for d in docs] + [(TENANT, d) for d in docs[:RESENT]]
    c, calls = await _run(other, messages + [(TENANT, j) for j in JUNK])
    # before: events 0, replayed 40 (every offset at or below the first pipeline's 59, which
    # the restored spend state seeded the fence with; before 8bf9443 counted replays apart:
    # events 37, duplicates 0), and 60 calls: the first pipeline's spend, none of these
    assert (c.events, c.duplicates, c.invalid) == (VALID, RESENT, len(JUNK)), c
    assert calls == VALID
