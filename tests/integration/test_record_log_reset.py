"""The record sink made as safe as the event sink (issue 9 B, E, F for the alerts and control
topics): a replaced log is a new log epoch, not silent skips and not a refusal to start; a
record the dead-letter topic refuses is sent cut down; store retries obey stop.

The log-reset tests run their own broker (fixtures of `test_log_reset`) so they can restart
it on the same port while a record sink is connected: it keeps nothing, like a topic deleted
and recreated in production.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from agentaudit.broker import LocalBroker, ensure_topics
from agentaudit.errors import StoreUnavailable
from agentaudit.settings import Settings
from agentaudit.sink.deadletter import KEEP_BYTES
from agentaudit.sink.pipeline_records.rows import ALERTS, CONTROL
from agentaudit.sink.pipeline_records.sink import RecordSink, run_record_sink
from agentaudit.store import open_store
from agentaudit.store.migrations import migrate
from agentaudit.store.protocol import Store
from tests.integration.helpers import produce_raw, scalar
from tests.integration.test_log_reset import own_broker, reset_settings, restart, wait_for
from tests.integration.test_record_sink import FAST_GROUP, Message, handled, records_until
from tests.unit.sink.pipeline_records.factories import alert, control, wire

pytestmark = pytest.mark.integration

__all__ = ["own_broker", "reset_settings"]  # fixtures used by name


def alerts(numbers: range) -> list[Message]:
    return [(b"acme", wire(alert(i))) for i in numbers]


def controls(numbers: range) -> list[Message]:
    return [(b"tenant=acme/agent=support-bot", wire(control(i))) for i in numbers]


def counts(store: Store, table: str, id_column: str) -> tuple[int, int]:
    """(rows, distinct ids) of a record table."""
    row = store.query(f"SELECT count(), uniqExact({id_column}) FROM {table}").result_rows[0]
    return int(row[0]), int(row[1])


def epochs(store: Store, table: str) -> list[tuple[Any, ...]]:
    return store.query(
        f"SELECT kafka_topic, log_epoch, count() FROM {table} GROUP BY ALL ORDER BY ALL"
    ).result_rows


async def produce_both(s: Settings, on_alerts: list[Message], on_control: list[Message]) -> None:
    await produce_raw(s, on_alerts, topic=s.alerts_topic)
    await produce_raw(s, on_control, topic=s.control_topic)


async def test_broker_restarted_under_a_running_record_sink_stores_every_new_record(
    reset_settings: Settings, own_broker: LocalBroker
) -> None:
    s = reset_settings
    await ensure_topics(s)
    # After the restart: fewer messages than before, so every new offset is at or below the
    # old watermarks; two alerts re-published (a job replaying) are dropped by id.
    before_a, before_c = alerts(range(30)), controls(range(6))
    after_a, after_c = alerts(range(100, 110)) + alerts(range(2)), controls(range(50, 53))
    with open_store(s, own=True) as store:
        migrate(store)
        sink = RecordSink(s, store, consumer_options=FAST_GROUP)
        task = asyncio.create_task(sink.run())

        def stored() -> tuple[tuple[int, int], tuple[int, int]]:
            return (
                counts(store, ALERTS.table, ALERTS.id_column),
                counts(store, CONTROL.table, CONTROL.id_column),
            )

        try:
            await produce_both(s, before_a, before_c)
            await wait_for(lambda: task.done() or stored() == ((30, 30), (6, 6)), 60, stored)
            await restart(own_broker, s)
            await produce_both(s, after_a, after_c)
            await wait_for(
                lambda: task.done() or stored() == ((40, 40), (9, 9)),
                90,
                lambda: (stored(), sink.processor.counters),
            )
        finally:
            sink.stop()
            await task
        assert stored() == ((40, 40), (9, 9))
        assert sink.processor.counters.duplicates >= 2
        assert epochs(store, ALERTS.table) == [(s.alerts_topic, 0, 30), (s.alerts_topic, 1, 10)]
        assert epochs(store, CONTROL.table) == [(s.control_topic, 0, 6), (s.control_topic, 1, 3)]


async def test_record_sink_restarted_after_a_log_reset_starts_and_stores_new_records(
    reset_settings: Settings, own_broker: LocalBroker
) -> None:
    """The worker's entry point on the old store and the new log: no refusal, no skips."""
    s = reset_settings
    await ensure_topics(s)
    before = alerts(range(20))
    with open_store(s, own=True) as store:
        migrate(store)
        await produce_raw(s, before, topic=s.alerts_topic)
        await records_until(s, store, handled(len(before)))
        await restart(own_broker, s)
        after = alerts(range(200, 205)) + alerts(range(19, 20))  # 5 new, 1 re-published
        await produce_raw(s, after, topic=s.alerts_topic)

        def alerts_stored() -> int:
            return int(scalar(store, f"SELECT count() FROM {ALERTS.table}"))

        stop = asyncio.Event()
        running = asyncio.create_task(run_record_sink(s, store, stop))
        try:
            await wait_for(lambda: running.done() or alerts_stored() == 25, 90, alerts_stored)
        finally:
            stop.set()
            sink = await running
        assert counts(store, ALERTS.table, ALERTS.id_column) == (25, 25)
        assert list(sink.processor.epochs.values()) == [1]  # the one partition the alerts are on
        assert epochs(store, ALERTS.table) == [(s.alerts_topic, 0, 20), (s.alerts_topic, 1, 5)]
        # Where to resume is recorded per epoch too.
        assert scalar(store, "SELECT max(log_epoch) FROM agentaudit.record_sink_offsets") == 1


async def test_records_the_dead_letter_topic_refuses_are_dead_letters_and_the_sink_goes_on(
    settings: Settings,
) -> None:
    await ensure_topics(settings)
    big = b'{"record":"alert","pad":"' + b"x" * 1_500_000 + b'"}'  # over the DLQ producer's 1 MiB
    messages: list[Message] = [
        (b"acme", big),
        (b"k" * 1_500_000, b"{oops"),  # a 1.5 MB key: refused whole, sent cut down
        (b"acme", wire(alert(1))),
    ]
    await produce_raw(settings, messages, topic=settings.alerts_topic)  # up to 2 MiB
    with open_store(settings, own=True) as store:
        migrate(store)
        sink = await records_until(settings, store, handled(len(messages)))
        assert sink.processor.counters.dead_lettered == 2
        assert sink.processor.counters.dlq_unsent == 0
        rows = store.query(
            "SELECT reason, length(original), detail FROM agentaudit.dead_letters ORDER BY reason"
        ).result_rows
        assert [(r[0], r[1]) for r in rows] == [("invalid_json", 5), ("oversized", KEEP_BYTES)]
        assert f"original {len(big)} bytes" in rows[1][2]
        assert scalar(store, f"SELECT count() FROM {ALERTS.table}") == 1


class UnreachableOnInsert:
    """The real store whose inserts fail as an unreachable endpoint does (fault injection)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.attempts = 0

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        return self.store.query(sql, parameters)

    def insert(self, *args: Any, **kwargs: Any) -> None:
        self.attempts += 1
        raise StoreUnavailable("test: the store endpoint is gone")


async def test_record_sink_stops_while_the_store_is_unreachable(settings: Settings) -> None:
    await ensure_topics(settings)
    await produce_raw(settings, alerts(range(3)), topic=settings.alerts_topic)
    with open_store(settings, own=True) as store:
        migrate(store)
        gone = UnreachableOnInsert(store)
        sink = RecordSink(settings, gone, consumer_options=FAST_GROUP)  # type: ignore[arg-type]
        task = asyncio.create_task(sink.run())
        deadline = time.monotonic() + 30
        while gone.attempts == 0:
            assert not task.done() and time.monotonic() < deadline, "no insert attempted"
            await asyncio.sleep(0.05)  # polling a counter the sink's thread sets
        sink.stop()
        # Stopping gives up the retry (nothing stored, nothing committed) within a bounded time.
        await asyncio.wait_for(task, 15)
        assert scalar(store, f"SELECT count() FROM {ALERTS.table}") == 0
