"""flush / shutdown semantics, bounded queue, the no-op default and configure()."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import agentaudit_sdk
from agentaudit_sdk import Client, InMemoryTransport, NoOpClient
from agentaudit_sdk.transport import TransportUnavailable


class GatedTransport(InMemoryTransport):
    """Blocks inside send_batch until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.gate = threading.Event()

    async def send_batch(self, records: list[tuple[bytes, bytes]]) -> None:
        self.entered.set()
        await asyncio.to_thread(self.gate.wait, 30)
        await super().send_batch(records)


def test_flush_covers_everything_emitted_before(
    client: Client, transport: InMemoryTransport
) -> None:
    for i in range(1_000):
        client.error("c", "E", attributes={"i": i})
    assert client.flush(10)
    assert [e["attributes"]["i"] for e in transport.events] == list(range(1_000))
    stats = client.stats
    assert (stats.enqueued, stats.sent, stats.queue_depth) == (1_000, 1_000, 0)


def test_batches_are_cut_at_batch_size(make_client: Any, transport: InMemoryTransport) -> None:
    client = make_client(transport, batch_size=10)
    for _ in range(35):
        client.error("c", "E")
    assert client.flush(10)
    assert transport.batches >= 4 and len(transport.records) == 35


def test_linger_sends_without_flush(make_client: Any, transport: InMemoryTransport) -> None:
    client = make_client(transport, linger_ms=5)
    client.error("c", "E")
    assert transport.wait_for(1, timeout=10)  # the background loop sent it on its own


def test_queue_full_drops_are_counted(make_client: Any) -> None:
    transport = GatedTransport()
    client = make_client(transport, max_queue=20, batch_size=1)
    client.error("c", "first")
    assert transport.entered.wait(10)  # the worker is now stuck in send_batch
    for _ in range(25):
        client.error("c", "E")
    assert client.stats.dropped_queue_full == 5 and client.stats.queue_depth == 20
    transport.gate.set()
    assert client.flush(10)
    stats = client.stats
    assert (stats.enqueued, stats.sent, stats.dropped_queue_full) == (21, 21, 5)


def test_flush_times_out_while_the_broker_hangs(make_client: Any) -> None:
    transport = GatedTransport()
    client = make_client(transport, batch_size=1)
    client.error("c", "E")
    assert transport.entered.wait(10)
    assert client.flush(0.05) is False
    transport.gate.set()
    assert client.flush(10)


def test_shutdown_is_idempotent_and_later_emits_are_counted(
    make_client: Any, transport: InMemoryTransport
) -> None:
    client = make_client(transport)
    client.error("c", "E")
    assert client.shutdown(10)
    assert transport.closed and len(transport.records) == 1
    assert client.shutdown(10) and client.shutdown(0)
    client.error("c", "late")
    with client.run():
        pass
    assert client.stats.dropped_closed == 3
    assert client.flush(1)  # nothing pending: returns at once
    assert not client._worker.thread.is_alive()


def test_shutdown_reports_loss_from_memory_spool(make_client: Any) -> None:
    transport = InMemoryTransport(available=False)
    client = make_client(transport)
    client.error("c", "E")
    assert client.flush(10)
    assert client.stats.spooled == 1
    assert client.shutdown(0.5) is False  # the broker never came back: nothing durable holds it
    assert client.stats.dropped_at_shutdown == 1


async def test_async_flush_and_shutdown_do_not_block_the_loop(make_client: Any) -> None:
    transport = GatedTransport()
    client = make_client(transport, batch_size=1)
    client.error("c", "E")
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    tick_task = asyncio.create_task(ticker())
    flush = asyncio.create_task(client.aflush(10))
    await asyncio.to_thread(transport.entered.wait, 10)
    before = ticks
    for _ in range(10):
        await asyncio.sleep(0)
    assert ticks > before and not flush.done()  # the loop keeps running while flush waits
    assert await client.aflush(0.01) is False
    transport.gate.set()
    assert await flush
    assert await client.ashutdown(10)
    tick_task.cancel()


def test_unavailable_transport_start_is_retried(make_client: Any) -> None:
    transport = InMemoryTransport(available=False)
    client = make_client(transport)
    client.error("c", "E")
    assert client.flush(10)
    transport.available = True
    assert transport.wait_for(1, timeout=10)
    assert transport.start_calls >= 2 and client.connected


def test_noop_default_client_and_configure(transport: InMemoryTransport) -> None:
    audit = agentaudit_sdk.get_client()  # as an agent module would, before anything is configured
    with audit.bind(tenant_id="acme", agent_id="bot"), audit.run(goal="g") as run:
        with audit.llm_call("openai", "gpt-4o") as call:
            call.record({"input_tokens": 1, "output_tokens": 1})
        audit.error("c", "E")
    assert audit.flush(1) and audit.stats.enqueued == 0 and run.run_id
    real = agentaudit_sdk.configure(Client(transport, tenant_id="acme", agent_id="bot"))
    try:
        audit.error("c", "E")  # the same proxy now forwards to the real client
        assert audit.flush(10) and len(transport.records) == 1
        assert audit.stats.sent == 1 and agentaudit_sdk.get_client() is audit
    finally:
        assert real.shutdown(10)
    agentaudit_sdk.configure(NoOpClient())
    audit.error("c", "E")
    assert len(transport.records) == 1


def test_configure_from_settings_uses_kafka_and_a_disk_spool(tmp_path: Path) -> None:
    from agentaudit.settings import Settings
    from agentaudit_sdk.kafka import KafkaTransport
    from agentaudit_sdk.spool import Spool

    settings = Settings(kafka_bootstrap="127.0.0.1:1", data_dir=tmp_path)
    client = Client.from_settings(settings, tenant_id="acme", agent_id="bot", connect_timeout_s=2)
    try:
        assert isinstance(client._worker.outbox.transport, KafkaTransport)
        assert isinstance(client._spool, Spool)
        assert client._spool.directory.parent == settings.spool_dir
        client.error("c", "E")
        assert client.flush(10) and client.stats.spooled == 1  # no broker: spooled, not lost
    finally:
        assert client.shutdown(10)  # durable spool keeps it for the next start


def test_kafka_transport_unreachable_raises_unavailable_quickly() -> None:
    from agentaudit_sdk.kafka import KafkaTransport

    transport = KafkaTransport("127.0.0.1:1", "t", connect_timeout_s=5)

    async def attempt() -> None:
        try:
            await transport.start()
        except TransportUnavailable:
            return
        raise AssertionError("start() succeeded without a broker")

    asyncio.run(attempt())


def test_importing_producers_does_not_import_aiokafka_or_the_contract() -> None:
    code = (
        "import sys, producers; print('aiokafka' in sys.modules, 'agentaudit_schemas.events' in "
        "sys.modules)"
    )
    root = Path(__file__).resolve().parents[3]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    )
    assert out.stdout.split() == ["False", "False"]
