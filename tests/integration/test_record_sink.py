"""Stream-job records → real broker → record sink → chDB: each record id stored once, junk
dead-lettered, restarts and a crash between two table inserts duplicate nothing; and the
hourly spend rollup fed by events that came through the event sink."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from agentaudit.broker import ensure_topics
from agentaudit.otlp.ingest import traces as otlp_traces
from agentaudit.settings import Settings
from agentaudit.sink.deadletter import LAND
from agentaudit.sink.pipeline_records.rows import RECORD_TABLES
from agentaudit.sink.pipeline_records.sink import RecordSink, run_record_sink
from agentaudit.sink.worker import SinkWorker
from agentaudit.store import open_store
from agentaudit.store.migrations import migrate
from agentaudit.store.protocol import Store
from agentaudit_schemas.records import ControlAction
from tests.factories import event_dict
from tests.factories import wire as event_wire
from tests.integration.helpers import produce_raw, scalar, sink_until
from tests.unit.sink.pipeline_records.factories import alert, control, drift, transition, wire

pytestmark = pytest.mark.integration

# The local broker holds a JoinGroup for half the session timeout: 1 s instead of 5 s per join.
FAST_GROUP = {"session_timeout_ms": 2000, "heartbeat_interval_ms": 500}
Message = tuple[bytes | None, bytes | None]


class Crash(Exception):
    """Stands in for the process dying at a flush window."""


async def records_until(
    settings: Settings,
    store: Store,
    done: Callable[[RecordSink], bool],
    *,
    fault: Callable[[str], None] | None = None,
    timeout: float = 30,
) -> RecordSink:
    """Run a RecordSink until `done(sink)` holds after a flush; re-raise what stopped it."""
    flushed = asyncio.Event()
    options: dict[str, Any] = {"fault": fault} if fault else {}
    sink = RecordSink(
        settings, store, on_flush=lambda _b: flushed.set(), consumer_options=FAST_GROUP, **options
    )
    task = asyncio.create_task(sink.run())
    deadline = time.monotonic() + timeout
    try:
        while not done(sink):
            if task.done():
                task.result()
            assert time.monotonic() < deadline, (
                f"record sink did not finish: {sink.processor.counters}"
            )
            flushed.clear()
            try:
                await asyncio.wait_for(flushed.wait(), 0.5)
            except TimeoutError:
                pass
    finally:
        sink.stop()
        (outcome,) = await asyncio.gather(task, return_exceptions=True)
    if isinstance(outcome, BaseException):
        raise outcome  # `done` may hold before the flush that failed
    return sink


def handled(n: int) -> Callable[[RecordSink], bool]:
    return lambda sink: sink.processor.counters.handled >= n


def ids_per_table(store: Store) -> dict[str, tuple[int, int]]:
    """Table → (rows, distinct ids)."""
    return {
        t.table: tuple(
            store.query(f"SELECT count(), uniqExact({t.id_column}) FROM {t.table}").result_rows[0]
        )  # type: ignore[misc]
        for t in RECORD_TABLES.values()
    }


async def test_records_land_once_each_junk_dead_lettered_and_restart_duplicates_nothing(
    settings: Settings,
) -> None:
    await ensure_topics(settings)
    a_dup = alert(1, observed=123.0)  # a replaying job re-publishes alert 1: same id, new message
    on_alerts: list[Message] = [(b"acme", wire(alert(i))) for i in range(4)]
    on_alerts += [(b"globex", wire(alert(9, tenant="globex"))), (b"acme", wire(a_dup))]
    on_alerts += [(b"acme", wire(transition(i))) for i in range(3)]
    on_alerts += [(b"acme", wire(drift(i, p_value=None if i else 0.01))) for i in range(3)]
    on_alerts += [
        (b"acme", b"{not json"),
        (b"acme", b'{"record": "spend_window", "tenant_id": "acme"}'),
        # valid, but the store refuses the count (UInt64): it must not stall the rest
        (b"acme", wire(drift(5).model_copy(update={"current_n": 2**64}))),
    ]
    blocked = control(0)
    on_control: list[Message] = [(blocked.scope.key.encode(), wire(blocked))]
    on_control += [
        (b"tenant=acme", wire(control(1, action=ControlAction.UNBLOCK))),
        (b"tenant=acme/agent=old-bot", None),  # a tombstone: skipped, not junk
        (blocked.scope.key.encode(), wire(blocked)),
    ]
    await produce_raw(settings, on_alerts, topic=settings.alerts_topic)
    await produce_raw(settings, on_control, topic=settings.control_topic)
    # Junk whose Kafka timestamp (producer-set; the broker takes any) is past any date: the
    # last message of its partition, so after the restart it is the anchor the sink checks.
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(
            settings.alerts_topic, b"{far future", key=b"acme", timestamp_ms=10**16
        )
    finally:
        await producer.stop()
    on_alerts.append((b"acme", b"{far future"))

    with open_store(settings, own=True) as store:
        migrate(store)
        sink = await records_until(settings, store, handled(len(on_alerts) + len(on_control)))
        c = sink.processor.counters
        assert c.stored == {"alert": 5, "breaker_transition": 3, "drift_score": 3, "control": 2}
        assert (c.duplicates, c.dead_lettered, c.tombstones) == (2, 4, 1)
        expected = {
            "agentaudit.alerts": (5, 5),
            "agentaudit.breaker_transitions": (3, 3),
            "agentaudit.drift_scores": (3, 3),
            "agentaudit.control": (2, 2),
            "agentaudit.heartbeats": (0, 0),  # the jobs' beats: tests/integration/test_heartbeat.py
        }
        assert ids_per_table(store) == expected
        # Drift scores keep their agent (the column migration 0010 adds).
        agents = store.query("SELECT DISTINCT agent_id FROM agentaudit.drift_scores").result_rows
        assert agents == [("support-bot",)]
        # The first copy of a re-published record is the one kept.
        assert (
            scalar(
                store,
                "SELECT observed FROM agentaudit.alerts WHERE alert_id = {id:String}",
                {"id": a_dup.alert_id},
            )
            == alert(1).observed
        )
        reasons = store.query(
            "SELECT reason, source_topic FROM agentaudit.dead_letters ORDER BY reason"
        ).result_rows
        assert reasons == [
            ("invalid_json", settings.alerts_topic),
            ("invalid_json", settings.alerts_topic),
            ("unencodable", settings.alerts_topic),
            ("unknown_type", settings.alerts_topic),
        ]
        row = store.query(
            "SELECT tenant_id, scope_key, `limit`, details, kafka_topic FROM agentaudit.alerts "
            "WHERE alert_id = {id:String}",
            {"id": alert(9, tenant="globex").alert_id},
        ).result_rows
        assert row == [
            (
                "globex",
                "tenant=globex/user=u-1/agent=support-bot",
                50.0,
                '{"budget":"daily","threshold":0.8}',
                settings.alerts_topic,
            )
        ]
        assert scalar(store, "SELECT count() FROM agentaudit.control WHERE until IS NULL") == 2

        # Restart: nothing stored twice; records published meanwhile land, and a re-publish of
        # a record stored before the restart is dropped by the recovered ids.
        later: list[Message] = [
            (b"acme", wire(alert(20))),
            (b"acme", wire(drift(0))),
            (b"acme", wire(transition(7))),
        ]
        await produce_raw(settings, later, topic=settings.alerts_topic)
        again = await records_until(settings, store, handled(len(later)))
        assert again.processor.counters.duplicates == 1
        assert again.processor.counters.already_stored == 0  # resumed after the last flush
        expected["agentaudit.alerts"] = (6, 6)
        expected["agentaudit.breaker_transitions"] = (4, 4)
        assert ids_per_table(store) == expected
        assert scalar(store, "SELECT count() FROM agentaudit.dead_letters") == 4
        assert "kafka timestamp 10000000000000000 ms" in str(
            scalar(
                store, "SELECT detail FROM agentaudit.dead_letters WHERE original = '{far future'"
            )
        )

        # The worker's entry point starts on this store and stops when asked.
        stop = asyncio.Event()
        stop.set()
        assert (await run_record_sink(settings, store, stop)).processor.counters.handled == 0


async def test_a_crash_between_table_inserts_then_restart_stores_each_record_once(
    settings: Settings,
) -> None:
    await ensure_topics(settings)
    records = [alert(0), drift(0), transition(0), alert(1), drift(1), transition(1)]
    messages: list[Message] = [(b"acme", wire(r)) for r in records]
    messages.append((b"acme", b"junk"))
    await produce_raw(settings, messages, topic=settings.alerts_topic)
    hits: list[str] = []

    def crash_after_first_record_table(point: str) -> None:
        hits.append(point)
        if hits.count("between_inserts") == 2:  # dead letters and alerts stored, the rest not
            raise Crash(point)

    with open_store(settings, own=True) as store:
        migrate(store)
        with pytest.raises(Crash):
            await records_until(
                settings, store, handled(len(messages)), fault=crash_after_first_record_table
            )
        assert scalar(store, "SELECT count() FROM agentaudit.alerts") == 2
        assert scalar(store, "SELECT count() FROM agentaudit.drift_scores") == 0
        assert scalar(store, "SELECT count() FROM agentaudit.record_sink_offsets") == 0

        sink = await records_until(settings, store, handled(len(messages)))
        assert sink.processor.counters.already_stored == 3  # 2 alerts + the dead letter
        assert ids_per_table(store) == {
            "agentaudit.alerts": (2, 2),
            "agentaudit.breaker_transitions": (2, 2),
            "agentaudit.drift_scores": (2, 2),
            "agentaudit.control": (0, 0),
            "agentaudit.heartbeats": (0, 0),
        }
        assert scalar(store, "SELECT count() FROM agentaudit.dead_letters") == 1


async def test_spend_hourly_rollup_is_fed_through_the_event_sink(settings: Settings) -> None:
    """events_ingest → events_ingest_mv → events → spend_hourly_mv → spend_hourly, all inside
    the event sink's inserts."""
    await ensure_topics(settings)
    docs = []
    for i in range(30):
        served = {"response_model": "gpt-5-2026-08-07"} if i % 7 == 0 else {}
        docs.append(
            event_dict(
                tenant=f"t{i % 2}",
                kind="llm_call",
                request_model=("gpt-5-mini", "gpt-5")[i % 3 % 2],
                status="error" if i % 5 == 0 else "ok",
                **served,
            )
        )
    docs += [event_dict(tenant="t0") for _ in range(5)]  # tool calls: calls, no spend
    with open_store(settings, own=True) as store:
        migrate(store)
        # Two halves in separate flushes, so the rollup holds at least two parts with the same
        # keys until a merge: only sum() + GROUP BY gives the totals.
        first, second = docs[::2], docs[1::2]
        await produce_raw(settings, [(d["tenant_id"].encode(), event_wire(d)) for d in first])
        producing: list[asyncio.Task[None]] = []

        def done(worker: SinkWorker) -> bool:
            accepted = worker.processor.counters.accepted
            if accepted >= len(first) and not producing:  # the first half is stored: send the rest
                messages = [(d["tenant_id"].encode(), event_wire(d)) for d in second]
                producing.append(
                    asyncio.get_running_loop().create_task(produce_raw(settings, messages))
                )
            return accepted >= len(docs)

        worker = await sink_until(settings, store, done)
        await asyncio.gather(*producing)
        assert worker.flushes >= 2
        from_events = store.query(
            "SELECT tenant_id, toStartOfHour(occurred_at) AS hour, "
            "if(response_model != '', response_model, request_model) AS model, sum(cost_usd), "
            "sum(input_tokens), sum(cached_input_tokens), "
            "countIf(type IN ('llm_call', 'tool_call')), countIf(type = 'llm_call'), "
            "countIf(status = 'error') FROM agentaudit.events "
            "GROUP BY tenant_id, hour, model ORDER BY tenant_id, hour, model"
        ).result_rows
        from_rollup = store.query(
            "SELECT tenant_id, hour, model, sum(cost_usd), sum(input_tokens), "
            "sum(cached_input_tokens), sum(calls), sum(llm_calls), sum(errors) "
            "FROM agentaudit.spend_hourly "
            "GROUP BY tenant_id, hour, model ORDER BY tenant_id, hour, model"
        ).result_rows
        assert from_rollup == from_events
        assert {r[2] for r in from_rollup} >= {"gpt-5-mini", "gpt-5", "gpt-5-2026-08-07", ""}
        assert sum(r[3] for r in from_rollup) > 0 and sum(r[6] for r in from_rollup) == len(docs)
        assert sum(r[8] for r in from_rollup) == 6


async def test_dead_letters_only_the_dlq_topic_holds_land_once_and_the_sinks_own_are_not_doubled(
    settings: Settings,
) -> None:
    """OTLP ingest and alert delivery write their dead letters only to the DLQ topic (marked
    `LAND`): the record sink stores each once in `dead_letters`, across a restart; a sink's own
    dead letter on that topic (no `LAND`, its row already stored by that sink) is left alone."""
    await ensure_topics(settings)
    otlp = [("reason", b"unknown_type"), ("detail", b"span maps to no event"), LAND]
    own = [("reason", b"invalid_json"), ("source", b"agentaudit.events.v1:0:3")]
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()

    async def send(value: bytes, headers: list[tuple[str, bytes]]) -> None:
        await producer.send_and_wait(settings.dlq_topic, value, key=b"acme", headers=headers)

    def landed(n: int) -> Callable[[RecordSink], bool]:
        return lambda sink: sink.processor.counters.landed >= n

    def rows(store: Store) -> list[tuple[Any, ...]]:
        return store.query(
            "SELECT reason, detail, tenant_id, original FROM agentaudit.dead_letters "
            "WHERE source_topic = {t:String} ORDER BY kafka_offset",
            {"t": settings.dlq_topic},
        ).result_rows

    try:
        await send(b"{oops", own)
        await send(b'{"item": "span-1"}', otlp)
        with open_store(settings, own=True) as store:
            migrate(store)
            sink = await records_until(settings, store, landed(1))
            assert sink.processor.counters.not_landed == 1
            assert rows(store) == [
                ("unknown_type", "span maps to no event", "acme", '{"item": "span-1"}')
            ]
            # a restart reads on from its last flush: the first row is not stored again
            await send(b'{"item": "span-2"}', otlp)
            await records_until(settings, store, landed(1))
            assert [r[3] for r in rows(store)] == ['{"item": "span-1"}', '{"item": "span-2"}']
    finally:
        await producer.stop()


async def test_an_otlp_retry_writes_its_dead_letters_again_and_each_is_stored_once(
    settings: Settings,
) -> None:
    """The OTLP receiver answers 503 when the broker stalls after a request's dead letters were
    sent; the exporter retries and the same dead letters reach the DLQ topic again. Each lands
    once, the copies are counted, and a copy arriving after a restart is still recognised (the
    identities are read back from the store)."""
    await ensure_topics(settings)
    request = ExportTraceServiceRequest()
    spans = request.resource_spans.add().scope_spans.add().spans
    for i in range(3):
        spans.add(name=f"not-genai-{i}", trace_id=bytes(16), span_id=bytes([i + 1] * 8))
    outcome = otlp_traces("acme", request)
    assert len(outcome.dead_letters) == 3
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()

    async def export() -> None:  # what the receiver does with one request's dead letters
        for key, value, headers in outcome.dead_letters:
            await producer.send_and_wait(settings.dlq_topic, value, key=key, headers=headers)

    def seen(n: int) -> Callable[[RecordSink], bool]:
        def done(sink: RecordSink) -> bool:
            counters = sink.processor.counters
            return counters.landed + counters.landed_copies >= n

        return done

    def stored(store: Store) -> tuple[int, int]:
        return store.query(
            "SELECT count(), uniqExact(original) FROM agentaudit.dead_letters "
            "WHERE source_topic = {t:String}",
            {"t": settings.dlq_topic},
        ).result_rows[0]

    try:
        await export()
        await export()
        with open_store(settings, own=True) as store:
            migrate(store)
            sink = await records_until(settings, store, seen(6))
            assert (sink.processor.counters.landed, sink.processor.counters.landed_copies) == (3, 3)
            assert stored(store) == (3, 3)
            await export()  # a third attempt, after a restart
            sink = await records_until(settings, store, seen(3))
            assert (sink.processor.counters.landed, sink.processor.counters.landed_copies) == (0, 3)
            assert stored(store) == (3, 3)
    finally:
        await producer.stop()
