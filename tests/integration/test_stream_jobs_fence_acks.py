"""The jobs' delivery fence on the real broker and runtime: a batch skipped past a hole is not
committed before it is applied (`stream_jobs.delivery`, `BatchingStream.skip`).

The consumer skips ahead once (as `jobs_workers`' `skip_ahead_after_rebalance` fault: a poll's
records of one partition taken from aiokafka, only the last delivered); the fence skips that
batch and seeks back, and the seek is held until the jobs are stopped (the window between a
hole and its rewound delivery, made as long as the test needs). Invariant: no offset is
committed for an event the jobs have not applied, so after the stop and a restart the spend
equals the sum over the events. Before the fix the skipped batch was acked when the agent
asked for its next take, faust filled the offsets the delivery jumped over in as acked, and
the commit passed over the whole hole: the restarted jobs never applied it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from faust.types import TP

from agentaudit.broker import ensure_topics
from agentaudit.settings import Settings
from stream_jobs.app import StreamJobsApp
from stream_jobs.delivery import Hole
from stream_jobs.runtime import FastConsumer, running
from stream_jobs.spend.readout import applied_position
from tests.helpers_wait import poll_until
from tests.integration.jobs_workers import check_spend, six, spend_states
from tests.integration.jobs_workload import (
    CLOCK_SHIFT,
    last_positions,
    produce,
    shifted_now,
    workload,
)

pytestmark = [pytest.mark.integration, pytest.mark.faults]  # ~15 s: two jobs starts


class SkipAheadOnce:
    """Armed: the consumer's next poll of an events partition with more than one record
    delivers only its last record (the others are taken from aiokafka and dropped)."""

    def __init__(self, topic: str) -> None:
        self.topic, self.armed = topic, False
        self.skipped: tuple[int, int, int] | None = None  # (partition, first, last) dropped
        self._original = FastConsumer._wait_next_records  # noqa: SLF001 (the fault)

    async def __call__(self, consumer: FastConsumer, timeout: float) -> tuple[Any, Any]:
        records, active = await self._original(consumer, timeout)
        if not self.armed or self.skipped is not None:
            return records, active
        for tp, found in (records or {}).items():
            if tp.topic == self.topic and len(found) > 1:
                records[tp] = found[-1:]
                self.skipped = (tp.partition, found[0].offset, found[-2].offset)
                break
        return records, active

    def method(self) -> Any:
        """`self` as a `FastConsumer` method (an instance is not bound as one)."""

        async def wait_next_records(consumer: FastConsumer, timeout: float) -> tuple[Any, Any]:
            return await self(consumer, timeout)

        return wait_next_records


def jobs_app(settings: Settings, app_id: str) -> StreamJobsApp:
    return StreamJobsApp(settings, app_id=app_id, clock=lambda: datetime.now(UTC) + CLOCK_SHIFT)


async def test_a_batch_skipped_past_a_hole_is_not_committed_before_it_is_applied(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, app_id = six(settings)
    _budgets, first_half, second_half = workload(shifted_now())
    await ensure_topics(settings)
    first = await produce(settings, first_half)
    skip = SkipAheadOnce(settings.events_topic)
    monkeypatch.setattr(FastConsumer, "_wait_next_records", skip.method())

    jobs = jobs_app(settings, app_id)
    holes: list[Hole] = []

    async def held_seek(_tp: Any, hole: Hole) -> None:
        holes.append(hole)  # the rewound delivery does not come while the test looks

    jobs._seek_back = held_seek  # type: ignore[method-assign]  # noqa: SLF001
    async with running(jobs.app, timeout=90):
        consumer = jobs.app.consumer
        fence = jobs.jobs.fence
        ends = {p: o for p, o, _v in first}  # the first half's last offset per partition
        await poll_until(
            lambda: all(fence.last_applied(p) == o for p, o in ends.items()), 60, "first half"
        )
        await consumer.commit()  # a committed offset per partition: faust's gaps apply
        skip.armed = True
        placed = first + await produce(settings, second_half)
        await poll_until(lambda: bool(holes), 60, "the hole", detail=lambda: f"{skip.skipped}")
        assert skip.skipped is not None
        partition, dropped_from, _last_dropped = skip.skipped
        assert holes[0].expected == dropped_from
        assert fence.last_applied(partition) == dropped_from - 1  # nothing past the hole
        await consumer.commit()  # the agent asked for its next take: the skipped batch is done
        committed = consumer.committed_offset(TP(settings.events_topic, partition))
        # before the fix: _last_dropped + 2 (past the skipped record), none of the hole applied
        assert committed <= dropped_from, (committed, skip.skipped, holes)

    # Stopped before the hole came back; a new worker must apply it, once.
    restarted = jobs_app(settings, app_id)
    want = last_positions(placed)

    async def caught_up() -> bool:
        states = await spend_states(settings, app_id)
        return {t: applied_position(s) for t, s in states.items()} == want

    async with running(restarted.app, timeout=90):
        await poll_until(caught_up, 60, "all events applied", interval=0.2)
    check_spend(await spend_states(settings, app_id), placed)
