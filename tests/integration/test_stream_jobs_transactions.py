"""Events from a transactional producer reach the stream jobs (spend, breakers, alerts).

Java's and librdkafka's exactly-once producers write a marker after each transaction, and the
records of an aborted one stay in the log: offsets no consumer of committed records is ever
given. The jobs' delivery fence took the first marker for a hole in the delivery and sought
back for ever: measured with transactions of 5 events, the first was applied and no later
event of the partition (120 s), the commit stayed at the marker, and the stall watchdog
re-sought every 10 s. The jobs now ask the log before seeking back
(`stream_jobs.runtime.log_probe`). Real broker, real librdkafka transactions.

Not tested here: aborted transactions. The local broker gives their records to readers of
committed records too (librdkafka's `read_committed` consumer reads them, measured), so what
the jobs must skip cannot be told apart from what they must apply; their markers are gaps
like the commit markers tested here.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from confluent_kafka import Producer

from agentaudit.broker import ensure_topics
from agentaudit.settings import Settings
from stream_jobs.app import StreamJobsApp
from stream_jobs.runtime import running
from stream_jobs.runtime.watchdog import StallWatch
from tests.factories import event_dict, wire
from tests.faults.conftest import FULL
from tests.helpers_wait import poll_until

pytestmark = pytest.mark.integration
TENANT = "txn-acme"


class Transactions:
    """A librdkafka transactional producer writing one tenant's events."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.producer = Producer(
            {
                "bootstrap.servers": settings.kafka_bootstrap,
                "transactional.id": f"txn-{settings.consumer_group}",
            }
        )
        self.producer.init_transactions(30)

    def write(self, events: int) -> None:
        """One committed transaction of `events` events (and its marker after them)."""
        self.producer.begin_transaction()
        for _ in range(events):
            value = wire(event_dict(TENANT, "llm_call"))
            self.producer.produce(self.settings.events_topic, key=TENANT.encode(), value=value)
        self.producer.commit_transaction(30)


def _partition(jobs: StreamJobsApp) -> Any:
    consumer = jobs.app.consumer
    (tp,) = [
        tp
        for tp in consumer.assignment()
        if tp.topic == jobs.settings.events_topic and consumer.highwater_of(tp)
    ]
    return tp


async def test_transactions_are_applied_one_after_another(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    await ensure_topics(settings)
    producer = await asyncio.to_thread(Transactions, settings)
    jobs = StreamJobsApp(settings, app_id=f"jobs-{settings.consumer_group}")
    caplog.set_level(logging.WARNING, logger="agentaudit.stream_jobs")
    async with running(jobs.app, timeout=60):
        await asyncio.to_thread(producer.write, 3)
        await poll_until(lambda: jobs.jobs.counters.events >= 3, 30, "the first transaction")
        await asyncio.to_thread(producer.write, 3)  # its records come after the first marker
        await poll_until(lambda: jobs.jobs.counters.events >= 6, 30, "the second transaction")
        tp = _partition(jobs)
        # the commit passes the first marker (offset 3): a restart reads on from the second
        await poll_until(
            lambda: (jobs.app.consumer.committed_offset(tp) or 0) >= 7, 30, "offsets committed"
        )
    assert (jobs.jobs.counters.events, jobs.jobs.counters.invalid) == (6, 0)
    assert jobs.log_probe.asked >= 1
    assert not [r.getMessage() for r in caplog.records if "seeking" in r.getMessage()]


@pytest.mark.faults
@pytest.mark.skipif(not FULL, reason="~15 s, ten transactions: ./run faults")
async def test_a_log_ending_in_a_marker_is_not_taken_for_a_stall(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """The last transaction's marker is the log's last offset: nothing to apply there, and
    the stall watchdog must not seek back to it for ever (every 10 s, a WARNING each time)."""
    await ensure_topics(settings)
    producer = await asyncio.to_thread(Transactions, settings)
    jobs = StreamJobsApp(settings, app_id=f"jobs-{settings.consumer_group}")
    jobs.stalls = StallWatch(0.5)
    caplog.set_level(logging.WARNING, logger="agentaudit.stream_jobs")
    async with running(jobs.app, timeout=60):
        for n in range(1, 11):
            await asyncio.to_thread(producer.write, 5)
            await poll_until(lambda n=n: jobs.jobs.counters.events >= 5 * n, 30, f"txn {n}")
        tp = _partition(jobs)
        end = jobs.app.consumer.highwater_of(tp)
        # the watchdog asked the log and took the trailing marker as applied
        await poll_until(
            lambda: jobs.jobs.fence.last_applied(tp.partition) == end - 1, 30, "marker settled"
        )
    assert jobs.jobs.counters.events == 50
    assert not [r.getMessage() for r in caplog.records if "nothing applied" in r.getMessage()]
