"""Faults on the way from `emit` to the broker: a transport that refuses records for good or
lets a stray CancelledError escape, and what the stats say afterwards. Every event is
delivered or counted, and the background thread never dies of a transport's failure."""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path
from typing import Any

from agentaudit_sdk import Client, InMemoryTransport
from agentaudit_sdk.kafka import KafkaTransport
from agentaudit_sdk.spool import Spool
from agentaudit_sdk.transport import RecordsRefused, TransportUnavailable


def messages(transport: InMemoryTransport) -> list[str]:
    return [event["payload"]["message"] for event in transport.events]


class RefusingTransport(InMemoryTransport):
    """Refuses for good every record whose value contains b"poison" (as Kafka refuses one
    over the topic's max.message.bytes) and delivers the rest of the batch."""

    async def send_batch(self, records: list[tuple[bytes, bytes]]) -> None:
        if not self.available:
            raise TransportUnavailable("marked unavailable")
        refused = {i: ValueError("too large") for i, (_, v) in enumerate(records) if b"poison" in v}
        await super().send_batch([r for i, r in enumerate(records) if i not in refused])
        if refused:
            raise RecordsRefused(refused)


class StrayCancelTransport(InMemoryTransport):
    """Its first send raises a CancelledError nobody asked for (aiokafka re-raises the one
    of an internal task it cancelled)."""

    def __init__(self) -> None:
        super().__init__()
        self.strays = 1

    async def send_batch(self, records: list[tuple[bytes, bytes]]) -> None:
        if self.strays:
            self.strays -= 1
            raise asyncio.CancelledError
        await super().send_batch(records)


def test_refused_records_are_counted_and_the_rest_is_delivered(make_client: Any) -> None:
    transport = RefusingTransport()
    client: Client = make_client(transport, batch_size=4)
    for i in range(10):
        client.error("c", "E", message="poison" if i in (2, 7) else f"m{i}")
    assert client.flush(10, delivered=True)
    stats = client.stats
    assert (stats.sent, stats.dropped_refused, stats.spool_depth) == (8, 2, 0)
    assert isinstance(client.recent_errors[-1], RecordsRefused)
    assert messages(transport) == [f"m{i}" for i in range(10) if i not in (2, 7)]


def test_a_refused_record_in_the_spool_does_not_hold_up_the_replay(make_client: Any) -> None:
    """Spooled during an outage, the poison record is refused on replay: it is dropped and
    counted, and the records spooled behind it are delivered (before: replayed forever)."""
    transport = RefusingTransport(available=False)
    client: Client = make_client(transport, batch_size=4)
    for i in range(10):
        client.error("c", "E", message="poison" if i == 1 else f"m{i}")
    assert client.flush(10) and client.stats.spooled == 10
    transport.available = True
    assert client.flush(10, delivered=True), client.stats
    stats = client.stats
    assert (stats.sent, stats.replayed, stats.dropped_refused, stats.spool_depth) == (9, 9, 1, 0)
    assert messages(transport) == [f"m{i}" for i in range(10) if i != 1]


def test_a_stray_cancelled_error_does_not_end_the_background_thread(make_client: Any) -> None:
    """Before, it escaped the loop's `except Exception` and the thread died: every later
    event waited in the queue forever."""
    transport = StrayCancelTransport()
    client: Client = make_client(transport, batch_size=2)
    for i in range(6):
        client.error("c", "E", message=f"m{i}")
    assert client.flush(10, delivered=True), client.stats
    assert messages(transport) == [f"m{i}" for i in range(6)]
    assert client.stats.sent == 6 and client.stats.spooled >= 1


def test_events_lost_at_shutdown_are_no_longer_counted_as_waiting(make_client: Any) -> None:
    """Every event is in exactly one place: those an in-memory spool still held at shutdown
    are `dropped_at_shutdown`, not also `spool_depth` (before: counted in both)."""
    client: Client = make_client(InMemoryTransport(available=False))
    for i in range(3):
        client.error("c", "E", message=f"m{i}")
    assert client.flush(10) and client.stats.spool_depth == 3
    assert client.shutdown(0.5) is False
    stats = client.stats
    assert (stats.dropped_at_shutdown, stats.spool_depth, stats.enqueued) == (3, 0, 3)


class HangingTransport(InMemoryTransport):
    """Connects, then never answers a send (a broker that accepts and stalls)."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()

    async def send_batch(self, records: list[tuple[bytes, bytes]]) -> None:
        self.entered.set()
        await asyncio.Event().wait()


def spooled_after(directory: Path) -> int:
    spool = Spool(directory)
    try:
        return len(spool)
    finally:
        spool.close()


def test_shutdown_with_a_timeout_spools_what_a_hanging_send_holds(
    make_client: Any, tmp_path: Path
) -> None:
    """Before, the stop waited for the send to time out (20 s by default) while the events
    sat in memory: `shutdown(1.5)` returned False and, once the process exited, they were gone
    without a count or a log line. Now the send is cut before the deadline and they are
    spooled: nothing is lost, and shutdown says so."""
    transport = HangingTransport()
    client: Client = make_client(transport, spool=Spool(tmp_path / "spool"), batch_size=10)
    client.error("c", "E", message="first")
    assert transport.entered.wait(10)
    for i in range(30):
        client.error("c", "E", message=f"m{i}")
    assert client.shutdown(1.5), client.stats
    stats = client.stats
    assert (stats.spooled, stats.spool_depth, stats.queue_depth, stats.sent) == (31, 31, 0, 0)
    assert spooled_after(tmp_path / "spool") == 31


def test_shutdown_with_a_timeout_spools_while_a_connect_hangs(
    make_client: Any, tmp_path: Path
) -> None:
    """The same for a connect that gets no answer (the real Kafka transport against a
    listener that accepts and never replies): before, the events waited behind the connect
    timeout (10 s) and were lost at exit."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        transport = KafkaTransport(f"127.0.0.1:{silent.getsockname()[1]}", "events")
        client: Client = make_client(transport, spool=Spool(tmp_path / "spool"), kill_switch=False)
        for i in range(30):
            client.error("c", "E", message=f"m{i}")
        assert client.shutdown(1.5), client.stats
    assert client.stats.spool_depth == 30 and spooled_after(tmp_path / "spool") == 30


class SilentStart(InMemoryTransport):
    """A broker that accepts the connection and never answers: start() never returns."""

    async def start(self) -> None:
        self.start_calls += 1
        await asyncio.Event().wait()


def test_a_hanging_connect_does_not_hold_events_in_memory(make_client: Any, tmp_path: Path) -> None:
    """Before, the worker waited for the connect attempt (up to `connect_timeout_s`, 30 s by
    default, on every retry) before it drained the queue: events sat in memory, where a
    crash loses them, and `flush` could not return. Now they go to the spool meanwhile."""
    transport = SilentStart()
    client: Client = make_client(transport, spool=Spool(tmp_path / "spool"))
    for i in range(30):
        client.error("c", "E", message=f"m{i}")
    assert client.flush(5), client.stats
    stats = client.stats
    assert (stats.spool_depth, stats.queue_depth, transport.start_calls) == (30, 0, 1)
    assert client.shutdown(1)  # the attempt still hangs: cut, the spool keeps the events
