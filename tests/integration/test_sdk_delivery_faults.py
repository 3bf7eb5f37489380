"""The SDK's delivery path against the real broker under faults: a record the producer refuses
must not stall everything behind it, and what `flush`/`stats` say agrees with the topic."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from agentaudit.settings import Settings

pytestmark = pytest.mark.integration


async def _read_topic(settings: Settings, at_least: int, idle_ms: int = 1500) -> list[bytes]:
    """Every value on the events topic: reads until `at_least` arrived, then until the topic
    stays quiet for `idle_ms` (so extra records would be seen too)."""
    consumer = AIOKafkaConsumer(
        settings.events_topic,
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
    )
    await consumer.start()
    try:
        values: list[bytes] = []
        while True:
            got = await consumer.getmany(timeout_ms=idle_ms if len(values) >= at_least else 10_000)
            if not got:
                assert len(values) >= at_least, f"only {len(values)} of {at_least} arrived"
                return values
            values += [m.value for batch in got.values() for m in batch]
    finally:
        await consumer.stop()


def test_a_refused_record_is_counted_and_does_not_stall_the_rest(settings: Settings) -> None:
    """aiokafka refuses a record over `max_request_size` (a broker refuses one over the
    topic's `max.message.bytes` the same way, MESSAGE_TOO_LARGE): retrying it can never
    succeed. Before, the whole batch was spooled and replayed forever: every later event
    queued behind it and nothing was delivered again."""
    from agentaudit_sdk import Client
    from agentaudit_sdk.kafka import KafkaTransport

    transport = KafkaTransport(
        settings.kafka_bootstrap, settings.events_topic, max_request_size=2048
    )
    client = Client(transport, tenant_id="acme", agent_id="bot", kill_switch=False, batch_size=4)
    try:
        client.error("checkout", "timeout", message="small 0")
        client.error("checkout", "timeout", message="big " + "z" * 2000)  # ~2.6 KB on the wire
        for i in range(1, 10):
            client.error("checkout", "timeout", message=f"small {i}")
        assert client.flush(30, delivered=True), f"delivery stalled: {client.stats}"
        stats = client.stats
        assert (stats.sent, stats.dropped_refused, stats.spool_depth) == (10, 1, 0), stats
        assert "max_request_size" in str(client.recent_errors[-1])
        values = asyncio.run(_read_topic(settings, 10))
    finally:
        client.shutdown(5)
    messages = sorted(orjson.loads(v)["payload"]["message"] for v in values)
    assert messages == sorted(f"small {i}" for i in range(10))


def test_a_send_failing_before_the_sender_ran_is_a_transport_failure(settings: Settings) -> None:
    """Right after a reconnect (topic metadata already known) `send()` can fail before
    aiokafka's sender task first ran; aborting the producer then awaited that cancelled task
    and its CancelledError escaped `send_batch`, ending the client's background thread (seen
    with a refused record). A wrongly typed key stands for any such synchronous failure."""
    from agentaudit_sdk.kafka import KafkaTransport
    from agentaudit_sdk.transport import TransportUnavailable

    async def scenario() -> None:
        transport = KafkaTransport(settings.kafka_bootstrap, settings.events_topic)
        try:
            await transport.start()
            await transport.send_batch([(b"acme", b"{}")])
            await transport.start()  # a reconnect: a fresh producer, its sender not yet run
            with pytest.raises(TransportUnavailable, match="bytes-like"):
                await transport.send_batch([("acme", b"{}")])  # type: ignore[list-item]
            await transport.start()
            await transport.send_batch([(b"acme", b"{}")])  # and it recovers
        finally:
            await transport.close()

    asyncio.run(scenario())
