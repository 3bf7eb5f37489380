"""A refused alert whose dead letter the DLQ producer cannot send whole (a key of a megabyte,
from another producer) is dead-lettered as a stub, and the receiver goes on.

Before, the send failed (MessageSizeTooLargeError) out of the receiver's loop on every
restart: the refused alert was posted again each time and nothing after it was delivered
(6 posts of it in 6 s, the next alert never)."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import timedelta

import pytest

from agentaudit.broker import ensure_topics
from agentaudit.notify.deliver import Answer
from agentaudit.notify.receiver import LoopOptions
from agentaudit.notify.routes import parse_routes
from agentaudit.notify.service import Notifier
from agentaudit.settings import Settings
from tests.faults.conftest import FULL
from tests.helpers_wait import poll_until
from tests.integration.helpers import produce_raw
from tests.integration.test_notify import _read_dlq
from tests.unit.notify.alerts import T0, make_alert

pytestmark = [
    pytest.mark.integration,
    pytest.mark.faults,
    pytest.mark.skipif(not FULL, reason="~3.5 s, a group join: ./run faults (unit case in CI)"),
]

ROUTES = parse_routes(
    'receivers: [{name: hook, type: webhook, url: "http://127.0.0.1:1/hook"}]\n'
    "routes: [{receiver: hook}]\n"
)
HUGE_KEY = b"k" * 1_100_000  # the DLQ producer sends at most 1 MiB


class RefusesOne:
    """400 for one alert id, 200 for the others; records each post's key."""

    def __init__(self, refused: str) -> None:
        self.refused = refused
        self.posts: list[str] = []

    async def post(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> Answer:
        self.posts.append(headers["Idempotency-Key"])
        if headers["Idempotency-Key"] == self.refused:
            return Answer(400, body="no such channel")
        return Answer(200)


async def _no_wait(seconds: float, stop: asyncio.Event) -> bool:
    await asyncio.sleep(0)
    return stop.is_set()


async def test_a_refused_alert_with_a_huge_key_is_dead_lettered_as_a_stub(
    settings: Settings,
) -> None:
    await ensure_topics(settings)
    refused, after = make_alert(1), make_alert(2)
    await produce_raw(
        settings,
        [
            (HUGE_KEY, refused.model_dump_json().encode()),
            (b"acme", after.model_dump_json().encode()),
        ],
        topic=settings.alerts_topic,
    )
    transport = RefusesOne(refused.alert_id)
    options = LoopOptions(
        sleeper=_no_wait,
        clock=lambda: T0 + timedelta(minutes=5),
        consumer_options={"session_timeout_ms": 2000, "heartbeat_interval_ms": 300},
    )
    notifier = Notifier(settings, ROUTES, transport=lambda _: transport, options=options)
    loop, stop = notifier.loops["hook"], asyncio.Event()
    task = asyncio.create_task(notifier.run(stop))
    try:
        await poll_until(
            lambda: sum(loop.handled.values()) >= 2,
            30,
            "both alerts handled",
            check=lambda: task.result() if task.done() else None,
            detail=lambda: f"posts {len(transport.posts)}, handled {loop.handled}",
        )
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    assert loop.handled == {"dead_lettered": 1, "delivered": 1}
    assert transport.posts == [refused.alert_id, after.alert_id]
    (dead,) = await _read_dlq(settings, 1)
    assert dead["event_id"] == refused.alert_id.encode() and dead["refusal"] == b"http_400"
    assert dead["original_key_sha256"] == hashlib.sha256(HUGE_KEY).hexdigest().encode()
