"""One receiver's handling of the topic's messages, without Kafka: dedup by alert id, routing,
expiry by an injected clock, the dead-letter path, and the crash window after a 2xx."""

from __future__ import annotations

import asyncio
import hashlib
import random
from datetime import timedelta
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import MessageSizeTooLargeError

from agentaudit.notify.deliver import Answer, Stopped, TransportError
from agentaudit.notify.receiver import LoopOptions, ReceiverLoop, _Listener
from agentaudit.notify.routes import parse_routes
from agentaudit.settings import Settings
from agentaudit.sink.pipeline_records.decode import MAX_RECORD_BYTES
from agentaudit_schemas.records import Severity
from agentaudit_sdk.kafka_config import KafkaSetupError
from tests.unit.notify.alerts import T0, make_alert
from tests.unit.notify.fakes import RecordingSleeper, ScriptedTransport

ROUTES = parse_routes("""
receivers:
  - {name: hook, type: webhook, url: "http://127.0.0.1:1/hook"}
  - {name: other, type: webhook, url: "http://127.0.0.1:2/hook"}
routes:
  - {match: {severity: [critical]}, receiver: hook}
  - {receiver: other}
max_alert_age_s: 3600
dedup_window: 100
""")
TP = TopicPartition("alerts", 0)


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, Any, Any, list[tuple[str, bytes]]]] = []

    async def send_and_wait(
        self,
        topic: str,
        value: Any,
        key: Any = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        self.sent.append((topic, value, key, headers or []))


def _loop(transport: ScriptedTransport, **kw: Any) -> ReceiverLoop:
    settings = Settings(alerts_topic="alerts", dlq_topic="dlq")
    loop = ReceiverLoop(
        settings,
        ROUTES,
        ROUTES.receiver("hook"),
        transport=transport,
        options=LoopOptions(
            sleeper=RecordingSleeper(),
            rng=random.Random(0),
            clock=lambda: T0 + timedelta(minutes=5),
            **kw,
        ),
    )
    loop.producer = FakeProducer()  # type: ignore[assignment]
    return loop


async def _feed(loop: ReceiverLoop, values: list[bytes]) -> None:
    for offset, value in enumerate(values):
        await loop._handle(TP, offset, b"acme", value, asyncio.Event())


async def test_dedup_routing_and_expiry() -> None:
    transport = ScriptedTransport([Answer(200)])
    loop = _loop(transport)
    a, b = make_alert(1), make_alert(2)
    old = make_alert(3, fired_at=T0 - timedelta(hours=2))
    warning = make_alert(4, severity=Severity.WARNING)
    transition = b'{"record":"breaker_transition","transition_id":"x"}'
    await _feed(
        loop, [v.model_dump_json().encode() for v in (a, b, a, old, warning)] + [transition]
    )
    assert [r[2]["Idempotency-Key"] for r in transport.requests] == [a.alert_id, b.alert_id]
    assert loop.handled == {
        "delivered": 2,
        "duplicate": 1,
        "expired": 1,
        "skipped": 1,
        "not_alert": 1,
    }
    assert loop.next[TP] == 6  # every message handled: all of them committed


async def test_ids_seen_before_the_committed_offset_are_remembered_not_sent() -> None:
    """After a restart the messages below the group's committed offset are re-read only to
    learn their ids: an alert the jobs re-published later is not posted again."""
    transport = ScriptedTransport([Answer(200)])
    loop = _loop(transport)
    a, b = make_alert(1), make_alert(2)
    loop.replay_until[TP] = 2  # offsets 0 and 1 were handled before this start
    await _feed(
        loop,
        [
            a.model_dump_json().encode(),
            b.model_dump_json().encode(),
            a.model_dump_json().encode(),
            make_alert(5).model_dump_json().encode(),
        ],
    )
    assert [r[2]["Idempotency-Key"] for r in transport.requests] == [make_alert(5).alert_id]
    assert loop.handled == {"duplicate": 1, "delivered": 1}


async def test_permanent_refusal_goes_to_the_dead_letter_topic_with_reason() -> None:
    transport = ScriptedTransport([Answer(422, body="unknown field")])
    loop = _loop(transport)
    await _feed(loop, [make_alert(1).model_dump_json().encode()])
    assert loop.handled == {"dead_lettered": 1}
    assert loop.next[TP] == 1  # handled: its offset is committed
    ((topic, value, key, headers),) = loop.producer.sent  # type: ignore[union-attr]
    h = dict(headers)
    assert topic == "dlq" and key == b"acme" and value == make_alert(1).model_dump_json().encode()
    assert h["reason"] == b"alert_refused" and h["refusal"] == b"http_422"
    assert h["receiver"] == b"hook" and b"unknown field" in h["detail"]
    assert h["source"] == b"alerts:0:0"


async def test_a_crash_after_the_2xx_leaves_the_offset_uncommitted() -> None:
    def crash(point: str) -> None:
        if point == "after_ack":
            raise RuntimeError("killed between the receiver's 2xx and our commit")

    transport = ScriptedTransport([Answer(200)])
    loop = _loop(transport, fault=crash)
    with pytest.raises(RuntimeError):
        await _feed(loop, [make_alert(1).model_dump_json().encode()])
    assert TP not in loop.next and not loop._uncommitted  # not committed: posted again on restart
    assert make_alert(1).alert_id not in loop.recent


async def test_a_failed_run_leaves_nothing_assigned_for_the_next_run() -> None:
    # The supervisor calls `run` again after a failure: that run must wait for its own
    # recovery, not handle records fetched from the committed offset before it seeks back.
    loop = _loop(ScriptedTransport([]))
    loop.settings = Settings(kafka_bootstrap="127.0.0.1:1", alerts_topic="alerts")
    loop.assigned.set()  # as a run that got partitions leaves it
    with pytest.raises(KafkaSetupError):  # nothing listens there
        await loop.run(asyncio.Event())
    assert not loop.assigned.is_set()


async def test_an_alert_no_payload_can_carry_is_dead_lettered_and_the_next_one_delivered() -> None:
    """A detail past 64 bits validates as an alert but no JSON payload can carry it: before,
    building the body raised out of the loop, the supervisor restarted it onto the same alert,
    and the receiver delivered nothing ever again."""
    transport = ScriptedTransport([Answer(200)])
    loop = _loop(transport)
    huge = make_alert(1).model_copy(update={"details": {"tokens": 2**64}})
    await _feed(loop, [huge.model_dump_json().encode(), make_alert(2).model_dump_json().encode()])
    assert loop.handled == {"dead_lettered": 1, "delivered": 1}
    assert [r[2]["Idempotency-Key"] for r in transport.requests] == [make_alert(2).alert_id]
    ((_topic, _value, _key, headers),) = loop.producer.sent  # type: ignore[union-attr]
    h = dict(headers)
    assert h["refusal"] == b"unencodable" and b"64-bit" in h["detail"]
    assert loop.next[TP] == 2


async def test_an_alert_spelled_with_json_escapes_is_delivered() -> None:
    """JSON may spell `"alert"` as `"\\u0061lert"`: the record sink stores that message as an
    alert, so delivery must not pass it over as `not_alert` (its byte pre-filter did)."""
    transport = ScriptedTransport([Answer(200)])
    loop = _loop(transport)
    escaped = make_alert(1).model_dump_json().encode().replace(b'"alert"', b'"\\u0061lert"', 1)
    assert b'"alert"' not in escaped
    await _feed(loop, [escaped])
    assert loop.handled == {"delivered": 1}


async def test_an_alert_whose_time_overflows_in_utc_is_passed_over_not_a_crash_loop() -> None:
    """`fired_at` "0001-01-01T00:30:00+01:00" is valid RFC 3339 but before year 1 in UTC: the
    conversion's OverflowError escaped pydantic and failed the loop on every restart."""
    transport = ScriptedTransport([Answer(200)])
    loop = _loop(transport)
    doc = make_alert(1).model_dump_json().encode()
    bad = doc.replace(
        b'"fired_at":"2026-03-01T12:00:00Z"', b'"fired_at":"0001-01-01T00:30:00+01:00"'
    )
    assert bad != doc
    await _feed(loop, [bad, make_alert(2).model_dump_json().encode()])
    assert loop.handled == {"not_alert": 1, "delivered": 1}  # the record sink dead-letters it


async def test_an_alert_the_record_sink_calls_oversized_is_not_posted() -> None:
    """Over `MAX_RECORD_BYTES` (details are unbounded) the record sink dead-letters the message
    as `oversized`; delivery posted it anyway, and on a refusal (413) sent it whole to the DLQ
    topic: over the DLQ producer's 1 MiB that send fails, the loop failed, and every restart
    met the alert again (the fake producer here takes any size: the test shows no post)."""
    transport = ScriptedTransport([Answer(200)])
    loop = _loop(transport)
    big = make_alert(1).model_copy(update={"details": {"pad": "x" * (2 << 20)}})
    assert len(big.model_dump_json()) > MAX_RECORD_BYTES
    await _feed(loop, [big.model_dump_json().encode(), make_alert(2).model_dump_json().encode()])
    assert loop.handled == {"not_alert": 1, "delivered": 1}
    assert [r[2]["Idempotency-Key"] for r in transport.requests] == [make_alert(2).alert_id]


class _Message:
    def __init__(self, offset: int, value: bytes) -> None:
        self.offset, self.key, self.value = offset, b"acme", value


async def test_a_revocation_ends_the_retries_and_the_rest_of_the_batch() -> None:
    """The group rebalanced while the receiver was down: the alert being retried and the
    rest of the fetch belong to the partitions' new owners now, who post them from the
    group's commit. Before, the member went on retrying and then posted the whole batch, so
    the new owners' posts made doubles (tests/integration/test_notify_rebalance.py)."""
    loop = _loop(ScriptedTransport([TransportError("connection refused")]))
    listener = _Listener(loop)
    waits = 0

    async def revoked_at_third_wait(seconds: float, stop: asyncio.Event) -> bool:
        nonlocal waits
        waits += 1
        if waits == 3:
            await listener.revoked([TP])
        return stop.is_set()

    loop.deliverer.sleeper = revoked_at_third_wait
    other = TopicPartition("alerts", 1)
    batch = {
        TP: [_Message(0, make_alert(1).model_dump_json().encode())],
        other: [_Message(0, make_alert(2).model_dump_json().encode())],
    }
    with pytest.raises(Stopped):
        await loop._handle_batch(batch)  # type: ignore[arg-type]
    transport = loop.deliverer.transport
    assert isinstance(transport, ScriptedTransport)
    assert {r[2]["Idempotency-Key"] for r in transport.requests} == {make_alert(1).alert_id}
    assert waits == 3 and not loop.next and not loop._uncommitted


async def test_an_alert_that_ages_out_while_retried_expires_and_the_next_is_delivered() -> None:
    """A receiver that fails on one alert for good (a 503 for its payload, a dead route of its
    own): before, it was retried for ever, past the age at which the alerts behind it are
    passed over, and every later alert of every tenant waited behind it. Now it expires at
    `max_alert_age_s` (here 1 h) like an alert read that old, and the queue moves on."""
    stuck, fine = make_alert(1), make_alert(2, fired_at=T0 + timedelta(minutes=30))
    now = [T0 + timedelta(minutes=5)]
    posts: list[str] = []

    class FailsOnOne:
        async def post(
            self, url: str, body: bytes, headers: dict[str, str], timeout: float
        ) -> Answer:
            posts.append(headers["Idempotency-Key"])
            return Answer(503 if headers["Idempotency-Key"] == stuck.alert_id else 200)

    async def time_passes(seconds: float, stop: asyncio.Event) -> bool:
        now[0] += timedelta(seconds=seconds)
        if len(posts) > 1000:  # never reached when it expires (~80 attempts)
            stop.set()
        return stop.is_set()

    loop = ReceiverLoop(
        Settings(alerts_topic="alerts", dlq_topic="dlq"),
        ROUTES,
        ROUTES.receiver("hook"),
        transport=FailsOnOne(),
        options=LoopOptions(sleeper=time_passes, rng=random.Random(0), clock=lambda: now[0]),
    )
    await _feed(loop, [stuck.model_dump_json().encode(), fine.model_dump_json().encode()])
    assert loop.handled == {"expired": 1, "delivered": 1}
    assert loop.next[TP] == 2  # both handled: committed
    assert posts.count(fine.alert_id) == 1
    assert T0 + timedelta(hours=1) <= now[0] < T0 + timedelta(hours=1, minutes=2)


class SizeLimitedProducer(FakeProducer):
    """Refuses what aiokafka's producer refuses before sending: a record over 1 MiB."""

    async def send_and_wait(
        self,
        topic: str,
        value: Any,
        key: Any = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        size = len(value or b"") + len(key or b"") + sum(len(v) for _, v in headers or [])
        if size > 1 << 20:
            raise MessageSizeTooLargeError(f"{size} bytes")
        await super().send_and_wait(topic, value, key, headers)


async def test_a_dead_letter_too_large_to_send_is_sent_as_a_stub() -> None:
    """A refused alert keyed with a megabyte (another producer's key): its dead letter did
    not fit the DLQ producer, the loop failed on every restart, re-posting the alert, and
    nothing after it was delivered (tests/integration/test_notify_dead_letter_size.py)."""
    transport = ScriptedTransport([Answer(400, body="no"), Answer(200)])
    loop = _loop(transport)
    producer = loop.producer = SizeLimitedProducer()  # type: ignore[assignment]
    huge = b"k" * 1_100_000
    await loop._handle(TP, 0, huge, make_alert(1).model_dump_json().encode(), asyncio.Event())
    await loop._handle(TP, 1, b"acme", make_alert(2).model_dump_json().encode(), asyncio.Event())
    assert loop.handled == {"dead_lettered": 1, "delivered": 1} and loop.next[TP] == 2
    ((_topic, _value, key, headers),) = producer.sent
    assert len(key) == 1024 and dict(headers)["refusal"] == b"http_400"
    assert dict(headers)["original_key_sha256"] == hashlib.sha256(huge).hexdigest().encode()
