"""One partition's backlog must not hold back another partition's events.

The stream's buffer (64 polled batches of up to 5,000 records, one queue for the topic)
delivered batches in arrival order: with tenant A's backlog queued on its partition,
tenant B's event on another partition waited behind all of it (measured: 60k events of A,
B's breaker input applied 3.6 s after it was produced). The bound here is relative: the
number of A's records the jobs applied between B's event being produced and B's event
being applied, read from the jobs' own calls, never a wall-clock constant.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from agentaudit.broker import ensure_topics
from agentaudit.settings import Settings
from stream_jobs.app import StreamJobsApp
from stream_jobs.jobs import Record
from stream_jobs.runtime import running
from tests.factories import event_dict, wire
from tests.faults.conftest import FULL
from tests.helpers_wait import poll_until
from tests.integration.helpers import produce_placed

pytestmark = [
    pytest.mark.integration,
    pytest.mark.faults,
    pytest.mark.skipif(not FULL, reason="~30 s, a backlog of 120k events: ./run faults"),
]  # the queueing itself: tests/unit/stream_jobs/test_runtime_fairness.py, in CI
BACKLOG = 120_000
A, B = 0, 1  # partitions


async def test_a_backlog_on_one_partition_does_not_delay_another(settings: Settings) -> None:
    await ensure_topics(settings)
    template = event_dict("tenant-a", "tool_call")
    backlog = [
        (A, b"tenant-a", wire({**template, "event_id": event_dict()["event_id"]}))
        for _ in range(BACKLOG)
    ]
    await produce_placed(settings, backlog)
    jobs = StreamJobsApp(settings, app_id=f"jobs-{settings.consumer_group}")
    applied = {A: 0, B: 0}
    a_when_b_applied: list[int] = []
    process = jobs.jobs.process

    def counted(partition: int, items: Any, now: datetime) -> list[Record]:
        batch = list(items)
        if partition == B:
            a_when_b_applied.append(applied[A])
        applied[partition] += len(batch)
        return process(partition, batch, now)

    jobs.jobs.process = counted  # type: ignore[method-assign]
    # Started before the jobs: its start-up's round trips would wait for the busy loop.
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        async with running(jobs.app, timeout=300):
            # A's backlog is being applied (fetched and buffered ahead of the jobs) ...
            await poll_until(lambda: applied[A] > 0, 60, "A's backlog started")
            # ... when B's event arrives on another partition.
            value = wire(event_dict("tenant-b"))
            await (await producer.send(settings.events_topic, value, b"tenant-b", partition=B))
            a_before = applied[A]  # B's event is in the log
            await poll_until(lambda: applied[B] == 1, 60, "B's event applied")
            await poll_until(lambda: applied[A] == BACKLOG, 240, "A's backlog applied")
    finally:
        await producer.stop()
    a_between = a_when_b_applied[0] - a_before
    print("fairness: A applied", a_before, "when B was produced,", a_when_b_applied, "when applied")
    # The run the jobs were applying, what was held for A, and the runs the fetch of B's event
    # takes meanwhile (it needs a turn of the loop between runs; more runs on a loaded box):
    # 791-11,582 of A's events measured, 15,791 at load ~12. Not A's backlog: with one queue
    # for the topic B's event waited behind what was buffered (up to 64 polls of 5,000), 27,373
    # and 55,000 of a 60k backlog; this one is twice that, so the bound is far from both.
    assert a_between <= BACKLOG // 4, (a_before, a_when_b_applied, BACKLOG)
    assert a_when_b_applied[0] < BACKLOG // 2, (a_before, a_when_b_applied, BACKLOG)
    assert jobs.jobs.counters.events == BACKLOG + 1
