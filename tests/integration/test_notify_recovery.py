"""A receiver whose rebalance recovery fails does not stall: the error reaches the supervisor,
which starts the loop again; the new member recovers and delivers, exactly once.

aiokafka only logs an error raised in a rebalance listener. Before the receiver kept it
(`agentaudit.rebalance`), a failed `consumer.committed` in `ReceiverLoop.recover` left
`assigned` unset and `run` waited for it forever: no alert delivered, no error anywhere.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaTimeoutError

from agentaudit.broker import ensure_topics
from agentaudit.notify.deliver import Answer
from agentaudit.notify.receiver import LoopOptions
from agentaudit.notify.routes import parse_routes
from agentaudit.notify.service import Notifier
from agentaudit.settings import Settings
from tests.helpers_wait import poll_until
from tests.integration.helpers import produce_raw
from tests.unit.notify.alerts import T0, make_alert
from tests.unit.notify.fakes import RecordingSleeper, ScriptedTransport

pytestmark = pytest.mark.integration

ROUTES = parse_routes(
    'receivers: [{name: hook, type: webhook, url: "http://127.0.0.1:1/hook"}]\n'
    "routes: [{receiver: hook}]\n"
)
FAST_GROUP = {"session_timeout_ms": 2000, "heartbeat_interval_ms": 500}
DEADLINE_S = 30


async def _deliver(
    settings: Settings, transport: ScriptedTransport, sleeper: RecordingSleeper, n: int
) -> dict[str, int]:
    """Run a notifier until `n` alerts were handled; what its receiver loop counted."""
    options = LoopOptions(
        sleeper=sleeper, clock=lambda: T0 + timedelta(minutes=5), consumer_options=FAST_GROUP
    )
    notifier = Notifier(settings, ROUTES, transport=lambda _name: transport, options=options)
    loop = notifier.loops["hook"]
    stop = asyncio.Event()
    task = asyncio.create_task(notifier.run(stop))
    try:
        await poll_until(
            lambda: sum(loop.handled.values()) >= n,
            DEADLINE_S,
            f"{n} alerts handled",
            check=lambda: task.result() if task.done() else None,
            detail=lambda: f"handled {loop.handled}, restarts {len(sleeper.delays)}",
        )
    finally:
        stop.set()
        await asyncio.wait_for(task, DEADLINE_S)
    return loop.handled


async def test_a_failed_recovery_restarts_the_receiver_and_delivers_exactly_once(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    await ensure_topics(settings)
    first, new = [make_alert(i) for i in range(3)], make_alert(3)

    async def publish(alerts: list[Any]) -> None:
        await produce_raw(
            settings,
            [(b"acme", a.model_dump_json().encode()) for a in alerts],
            topic=settings.alerts_topic,
        )

    await publish(first)
    delivered = ScriptedTransport([Answer(200)])
    assert await _deliver(settings, delivered, RecordingSleeper(), 3) == {"delivered": 3}

    # The jobs re-publish the three (same ids, new offsets); one new alert. The restarted
    # receiver's first recovery fails in its broker round trip.
    await publish([*first, new])
    committed = AIOKafkaConsumer.committed
    calls: list[Any] = []

    async def committed_failing_once(self: AIOKafkaConsumer, tp: Any) -> Any:
        calls.append(tp)
        if len(calls) == 1:
            raise KafkaTimeoutError("committed offset not fetched in time")
        return await committed(self, tp)

    monkeypatch.setattr(AIOKafkaConsumer, "committed", committed_failing_once)
    transport, sleeper = ScriptedTransport([Answer(200)]), RecordingSleeper()
    with caplog.at_level(logging.ERROR, logger="agentaudit.notify"):
        handled = await _deliver(settings, transport, sleeper, 4)

    # The error reached the supervisor, which started the loop again, once.
    assert len(sleeper.delays) == 1
    assert any("delivery failed (KafkaTimeoutError" in r.getMessage() for r in caplog.records)
    # The second member recovered: the three re-published alerts were recognised from the
    # replay below the committed offset; only the new one was posted, once.
    assert handled == {"duplicate": 3, "delivered": 1}
    assert [r[2]["Idempotency-Key"] for r in transport.requests] == [new.alert_id]
