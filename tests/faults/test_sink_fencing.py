"""A sink process frozen past its session (SIGSTOP, a long pause) must not store what the
partitions' new owner already stored.

Sink A freezes (its whole event loop, heartbeats included) just before its first insert; the
group drops it and gives its partition to sink B, which recovers from the store and stores
the events. A then wakes and goes on with the batch it held. Before the membership check in
`agentaudit.sink.flushing` it inserted it too: 100 events, 200 rows, every chain forked.
About 10 s (a store and two group members started, three rebalances): full matrix only.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from agentaudit.broker import ensure_topics
from agentaudit.settings import Settings
from agentaudit.sink.clients import membership_lease_s
from agentaudit.sink.faults import CrashPlan
from agentaudit.sink.worker import SinkWorker
from agentaudit.store import open_store
from agentaudit.store.migrations import migrate
from agentaudit.store.protocol import Store
from tests.factories import event_dict, wire
from tests.faults.conftest import FULL
from tests.helpers_wait import poll_until, poll_value
from tests.integration.helpers import assert_chains_valid, produce_raw, scalar

pytestmark = pytest.mark.skipif(not FULL, reason="~10 s: FAULT_MATRIX=full (./run faults)")

EVENTS = 100
# A short session, so that the frozen sink is dropped from the group within a second.
FAST_GROUP = {"session_timeout_ms": 1000, "heartbeat_interval_ms": 200}


def _member(settings: Settings, store: Store, **kwargs: Any) -> SinkWorker:
    worker = SinkWorker(settings, store, **kwargs)
    worker.consumer_options = FAST_GROUP
    worker.lease_s = membership_lease_s(FAST_GROUP)
    return worker


def _stored(store: Store) -> int:
    return int(scalar(store, "SELECT count() FROM agentaudit.events"))


class _Other:
    """Sink B, in a thread of its own (A's loop is frozen): runs until `stop` is set."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(settings, store), daemon=True)

    def _run(self, settings: Settings, store: Store) -> None:
        async def run() -> None:
            worker = _member(settings, store)
            task = asyncio.create_task(worker.run())
            await poll_until(lambda: self.stop.is_set() or task.done(), 60, "the end of the test")
            worker.stop()
            await task

        try:
            asyncio.run(run())
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


class _FreezeBeforeFirstInsert(CrashPlan):
    """At A's first `before_insert`: start B and block A's loop until B stored everything."""

    def __init__(self, other: _Other, store: Store) -> None:
        super().__init__(None)
        self.other, self.store, self.frozen = other, store, False

    def hit(self, point: str) -> None:
        if point != "before_insert" or self.frozen:
            return
        self.frozen = True
        self.other.thread.start()
        # Blocking on purpose: the frozen process sends no heartbeat either.
        poll_value(lambda: _stored(self.store) >= EVENTS, 60, "sink B to store the events")


async def test_a_sink_frozen_past_its_session_does_not_store_the_batch_again(
    settings: Settings,
) -> None:
    settings = settings.model_copy(update={"partitions": 1, "sink_batch_size": 1000})
    await ensure_topics(settings)
    await produce_raw(settings, [(b"acme", wire(event_dict("acme"))) for _ in range(EVENTS)])
    with open_store(settings, own=True) as store:
        migrate(store)
        other = _Other(settings, store)
        frozen = _FreezeBeforeFirstInsert(other, store)
        a = _member(settings, store, crash_plan=frozen)
        task = asyncio.create_task(a.run())
        try:
            # Woken, A either stores its batch or finds it was dropped from the group.
            await poll_until(
                lambda: a.flushes + getattr(a, "fenced", 0) >= 1, 60, "A to store or drop its batch"
            )
        finally:
            a.stop()
            other.stop.set()
            await task
            other.thread.join(30)
        assert other.error is None, other.error
        rows = store.query(
            "SELECT count(), uniqExact(kafka_partition, kafka_offset) FROM agentaudit.events"
        ).result_rows[0]
        assert tuple(rows) == (EVENTS, EVENTS)  # (200, 100) before
        assert a.flushes == 0, "the frozen sink stored its batch after all"
        assert assert_chains_valid(store) == EVENTS
