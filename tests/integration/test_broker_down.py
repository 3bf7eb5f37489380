"""The SDK starts while the broker is down, spools, and delivers everything once it is up."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer

from agentaudit.broker import LocalBroker, ensure_topics, free_port
from agentaudit.settings import Settings

pytestmark = pytest.mark.integration


async def _read_all(settings: Settings, n: int) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        settings.events_topic,
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
    )
    await consumer.start()
    try:
        values: list[bytes] = []
        while len(values) < n:
            records = await consumer.getmany(timeout_ms=5000)
            assert records, f"only {len(values)} of {n} events arrived"
            values += [m.value for batch in records.values() for m in batch]
        return values
    finally:
        await consumer.stop()


def test_events_emitted_while_broker_down_all_arrive_in_order(settings: Settings) -> None:
    from agentaudit_sdk import Client

    port = free_port()
    settings = settings.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{port}", "partitions": 1})
    client = Client.from_settings(
        settings, tenant_id="acme", agent_id="support-bot", agent_version="1.0.0"
    )
    try:
        for i in range(300):
            client.error("checkout", "timeout", message=f"attempt {i}")
        assert client.flush(30), "with the broker down, flush() returns once everything is spooled"
        assert not client.flush(1, delivered=True), (
            "delivery cannot succeed while the broker is down"
        )
        assert client.stats.spooled >= 1 and client.stats.sent == 0

        with LocalBroker(port=port):
            asyncio.run(ensure_topics(settings))
            assert client.flush(60, delivered=True), f"spool not replayed: {client.stats}"
            assert client.stats.sent == 300 and client.stats.replayed >= 1
            values = asyncio.run(_read_all(settings, 300))
    finally:
        client.shutdown(5)
    messages = [v.decode() for v in values]
    assert [m.split("attempt ")[1].split('"')[0] for m in messages] == [str(i) for i in range(300)]
