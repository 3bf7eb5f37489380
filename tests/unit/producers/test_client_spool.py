"""Client + spool: broker outages lose nothing, keep order, and survive a restart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agentaudit_sdk import Client, InMemoryTransport
from agentaudit_sdk.spool import Spool
from agentaudit_sdk.spool_memory import MemorySpool


def emit_range(client: Client, start: int, stop: int, tenant: str = "acme") -> None:
    for i in range(start, stop):
        client.error("c", "E", tenant_id=tenant, attributes={"seq": i})


def seqs(transport: InMemoryTransport) -> list[int]:
    return [event["attributes"]["seq"] for event in transport.events]


def test_unavailable_then_available_replays_in_order(make_client: Any) -> None:
    transport = InMemoryTransport(available=False)
    client: Client = make_client(transport, batch_size=16)
    emit_range(client, 0, 100)
    assert client.flush(10)  # written to the spool counts as flushed
    stats = client.stats
    assert (stats.spooled, stats.sent, stats.spool_depth, transport.records) == (100, 0, 100, [])
    assert client.flush(0.05, delivered=True) is False  # still only on disk, not at the broker
    transport.available = True
    assert client.flush(10, delivered=True)  # waits for the replay
    assert len(transport.records) == 100
    emit_range(client, 100, 120)  # after the replay: sent directly
    assert client.flush(10)
    assert seqs(transport) == list(range(120))
    stats = client.stats
    assert (stats.spooled, stats.replayed, stats.sent, stats.spool_depth) == (100, 100, 120, 0)


def test_outage_mid_stream_keeps_order(make_client: Any) -> None:
    transport = InMemoryTransport()
    client: Client = make_client(transport, batch_size=8)
    emit_range(client, 0, 30)
    assert client.flush(10)
    transport.available = False
    emit_range(client, 30, 60)
    assert client.flush(10)
    transport.available = True
    emit_range(client, 60, 90)  # may be queued before the reconnect: still behind the spool
    assert client.flush(10, delivered=True)
    assert seqs(transport) == list(range(90))
    stats = client.stats
    assert stats.sent == 90 and stats.replayed == stats.spooled >= 30 and stats.spool_depth == 0


def test_spool_full_drops_are_counted(make_client: Any) -> None:
    transport = InMemoryTransport(available=False)
    client: Client = make_client(transport, spool=MemorySpool(max_bytes=4 * 1024))  # a few events
    emit_range(client, 0, 20)
    assert client.flush(10)
    stats = client.stats
    assert stats.spooled + stats.dropped_spool_full == 20
    assert stats.spooled > 0 and stats.dropped_spool_full > 0 and stats.spool_depth == stats.spooled


def test_restart_replays_the_disk_spool(make_client: Any, tmp_path: Path) -> None:
    down = InMemoryTransport(available=False)
    first: Client = make_client(down, spool=Spool(tmp_path / "spool"))
    emit_range(first, 0, 40, tenant="t-a")
    emit_range(first, 40, 50, tenant="t-b")
    assert first.shutdown(10)  # durable: nothing lost although nothing was sent
    assert first.stats.spooled == 50 and first.stats.dropped_at_shutdown == 0

    up = InMemoryTransport()
    second: Client = make_client(up, spool=Spool(tmp_path / "spool"))
    assert second.flush(10, delivered=True)  # covers what the previous process left
    assert seqs(up) == list(range(50))
    assert [key for key, _ in up.records] == [b"t-a"] * 40 + [b"t-b"] * 10
    assert second.stats.replayed == 50 and len(list((tmp_path / "spool").glob("*.seg"))) == 0


def test_slots_left_by_more_processes_than_restart_are_replayed(
    make_client: Any, tmp_path: Path
) -> None:
    """Three processes spooled (broker down) into slots 00-02 and ended; one starts again. It
    claims one slot; the other two were replayed only when more processes claimed them,
    so after a scale-down they sat on disk for good, in no one's stats (found by the SDK
    probe). A connected client with an empty spool now replays slots nobody owns."""
    base = tmp_path / "spool"
    down = InMemoryTransport(available=False)
    for k in range(3):
        ended: Client = make_client(down, spool=Spool(base / f"slot-{k:02d}"))
        emit_range(ended, 100 * k, 100 * k + 10)
        assert ended.shutdown(10) and ended.stats.spooled == 10
    live = Spool(base / "slot-01")  # a live process's slot: not another's to take
    emit_live: Client = make_client(InMemoryTransport(available=False), spool=live)
    emit_range(emit_live, 500, 505)
    assert emit_live.flush(10)

    up = InMemoryTransport()
    restarted: Client = make_client(up, spool=Spool.claim(base))
    assert restarted.flush(10, delivered=True)
    emit_range(restarted, 900, 901)
    assert restarted.flush(10)
    assert restarted.shutdown(10)
    assert sorted(seqs(up)) == [*range(0, 10), *range(200, 210), 900]
    assert restarted.stats.replayed == 20
    assert not list((base / "slot-00").glob("*.seg")) and not list((base / "slot-02").glob("*.seg"))
    assert len(list((base / "slot-01").glob("*.seg"))) > 0  # still the live process's


def test_shutdown_says_false_when_events_were_dropped_before(
    make_client: Any, tmp_path: Path
) -> None:
    """shutdown() promises True only if nothing was lost, but it judged only what was left at
    the end: with a full disk spool (41 of 50 dropped) or a full queue it still said True
    (found by the SDK probe comparing shutdown's answer with stats)."""
    full = Spool(tmp_path / "spool", max_bytes=4096)
    client: Client = make_client(InMemoryTransport(available=False), spool=full)
    emit_range(client, 0, 50)
    assert client.flush(10)
    dropped = client.stats.dropped_spool_full
    assert 0 < dropped < 50 and client.shutdown(10) is False

    ok: Client = make_client(InMemoryTransport(available=False), spool=Spool(tmp_path / "big"))
    emit_range(ok, 0, 50)
    assert ok.shutdown(10)  # all of it in the disk spool: nothing lost
