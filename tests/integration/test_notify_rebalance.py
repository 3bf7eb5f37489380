"""A rebalance while the receiver is down: the member that lost partitions must not go on
posting what it had fetched from them, since their new owner posts those from the group's
commit. Before, a second notifier joining made 4 of 12 alerts reach the receiver twice (the
first member's fetched batch of the partitions it lost), and a member could stay stuck
retrying an alert of a partition no longer its own while its own partitions waited."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from agentaudit.broker import ensure_topics
from agentaudit.notify.deliver import Answer, Transport, TransportError
from agentaudit.notify.receiver import LoopOptions
from agentaudit.notify.routes import parse_routes
from agentaudit.notify.service import Notifier
from agentaudit.settings import Settings
from tests.faults.conftest import FULL
from tests.helpers_wait import poll_until
from tests.unit.notify.alerts import T0, make_alert

pytestmark = [
    pytest.mark.integration,
    pytest.mark.faults,
    pytest.mark.skipif(not FULL, reason="~6 s, three group joins: ./run faults"),
]

ROUTES = parse_routes(
    'receivers: [{name: hook, type: webhook, url: "http://127.0.0.1:1/hook"}]\n'
    "routes: [{receiver: hook}]\n"
)
FAST_GROUP = {"session_timeout_ms": 2000, "heartbeat_interval_ms": 300}
DEADLINE_S = 40
PER_PARTITION = 4


class Receiver:
    """One receiver both members post to: refuses connections until `up`; records who got
    which alert acknowledged."""

    def __init__(self) -> None:
        self.up = False
        self.tries: Counter[str] = Counter()
        self.acked: list[tuple[str, str]] = []

    def transport(self, member: str) -> Transport:
        receiver = self

        class Member:
            async def post(
                self, url: str, body: bytes, headers: dict[str, str], timeout: float
            ) -> Answer:
                receiver.tries[member] += 1
                if not receiver.up:
                    raise TransportError("connection refused")
                receiver.acked.append((member, headers["Idempotency-Key"]))
                return Answer(200)

        return Member()


async def _retry_soon(seconds: float, stop: asyncio.Event) -> bool:
    """The back-off's wait, shortened (the receiver comes back when the test says)."""
    try:
        await asyncio.wait_for(stop.wait(), 0.05)
    except TimeoutError:
        return False
    return True


async def _committed(settings: Settings, group: str, partitions: int) -> list[int | None]:
    reader = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=group)
    await reader.start()
    try:
        tps = [TopicPartition(settings.alerts_topic, p) for p in range(partitions)]
        return [await reader.committed(tp) for tp in tps]
    finally:
        await reader.stop()


async def test_a_member_that_lost_partitions_does_not_post_their_alerts(
    settings: Settings,
) -> None:
    await ensure_topics(settings)
    partitions = settings.partitions
    alerts = [make_alert(i) for i in range(PER_PARTITION * partitions)]
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        for i, alert in enumerate(alerts):
            value = alert.model_dump_json().encode()
            await producer.send(settings.alerts_topic, value, key=b"acme", partition=i % partitions)
        await producer.flush()
    finally:
        await producer.stop()

    receiver, stop = Receiver(), asyncio.Event()
    options = LoopOptions(
        sleeper=_retry_soon,
        clock=lambda: T0 + timedelta(minutes=5),
        consumer_options=FAST_GROUP,
    )
    first = Notifier(settings, ROUTES, transport=lambda _: receiver.transport("a"), options=options)
    tasks = [asyncio.create_task(first.run(stop))]
    try:
        # the first member holds every partition and retries its first alert
        await poll_until(lambda: receiver.tries["a"] > 0, DEADLINE_S, "the first member posting")
        second = Notifier(
            settings, ROUTES, transport=lambda _: receiver.transport("b"), options=options
        )
        tasks.append(asyncio.create_task(second.run(stop)))
        await poll_until(lambda: receiver.tries["b"] > 0, DEADLINE_S, "the rebalance done")
        receiver.up = True
        group = f"{settings.consumer_group}-notify-hook"
        ends = [PER_PARTITION] * partitions

        async def all_committed() -> bool:
            return await _committed(settings, group, partitions) == ends

        await poll_until(all_committed, DEADLINE_S, "every alert committed by its owner")
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), DEADLINE_S)

    posts = Counter(alert_id for _, alert_id in receiver.acked)
    assert set(posts) == {a.alert_id for a in alerts}
    assert {k: n for k, n in posts.items() if n > 1} == {}, receiver.acked
