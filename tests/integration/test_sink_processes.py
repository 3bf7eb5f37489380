"""The sink split over processes: partitions shared in one consumer group, one store owner."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Collection
from pathlib import Path

import pytest

from agentaudit.broker import ensure_topics
from agentaudit.errors import StoreUnavailable
from agentaudit.settings import Settings
from agentaudit.sink.pool import SinkProcesses
from agentaudit.store import open_store
from agentaudit.store.migrations import migrate
from tests.factories import event_dict, wire
from tests.helpers_wait import poll_until
from tests.integration.helpers import assert_chains_valid, produce_raw, scalar, served_scalar
from tests.integration.procs import alive, children_of

pytestmark = pytest.mark.integration


async def test_two_sink_processes_store_every_event_once(settings: Settings) -> None:
    await ensure_topics(settings)
    n = 3000
    docs = [event_dict(tenant=f"tenant-{i % 20}") for i in range(n)]
    junk = [(b"tenant-1", b"{not json")] * 3
    with open_store(settings, own=True) as store:
        migrate(store)
        done = asyncio.Event()
        pool = SinkProcesses(
            settings,
            2,
            on_progress=lambda: (
                done.set() if pool.accepted + pool.totals().dead_lettered >= n + 3 else None
            ),
        )
        async with pool:
            await pool.wait_ready(90)
            await produce_raw(settings, [(d["tenant_id"].encode(), wire(d)) for d in docs] + junk)
            await asyncio.wait_for(done.wait(), 120)
        assert all(child.proc.returncode == 0 for child in pool.children)
        assert [c.counters.accepted > 0 for c in pool.children] == [True, True], (
            "both shared the work"
        )
        assert scalar(store, "SELECT count() FROM agentaudit.events") == n
        assert scalar(store, "SELECT uniqExact(event_id) FROM agentaudit.events") == n
        assert scalar(store, "SELECT count() FROM agentaudit.dead_letters") == 3
        assert assert_chains_valid(store) == n


def test_a_sink_process_needs_a_running_store_owner(settings: Settings) -> None:

    with (
        pytest.raises(StoreUnavailable, match="no process serves"),
        open_store(settings, attach=True),
    ):
        pass


@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="parent-death signal is Linux only"
)
async def test_sink_processes_stop_when_their_store_owner_dies(settings: Settings) -> None:
    """A worker killed with SIGKILL cannot stop its sink processes; they must not linger as
    orphans in the consumer group (they insert through the dead worker's store)."""
    await ensure_topics(settings)
    worker = await _start_worker(settings, 2)
    try:
        docs = [event_dict(tenant=f"tenant-{i % 20}") for i in range(200)]
        await produce_raw(settings, [(d["tenant_id"].encode(), wire(d)) for d in docs])
        await _wait_stored(settings, len(docs), 120)  # both children are up and idle now
        children = children_of(worker.pid)
        assert len(children) == 2, children
        worker.kill()
        await worker.wait()
        # before the fix: still there after minutes
        await _wait_gone(children, 30)
    finally:
        if worker.returncode is None:
            worker.kill()
            await worker.wait()


def _inserts_waiting_on(port: int) -> int:
    """Server-side sockets of `port` holding request bytes nobody has read (IPv4)."""
    waiting = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].split(":")[1], 16)
        rx_queue = int(fields[4].split(":")[1], 16)
        if local_port == port and fields[3] == "01" and rx_queue > 0:  # 01: ESTABLISHED
            waiting += 1
    return waiting


async def _start_worker(settings: Settings, sink_processes: int) -> asyncio.subprocess.Process:
    env = {**os.environ, **settings.to_env(), "AGENTAUDIT_SINK_PROCESSES": str(sink_processes)}
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agentaudit.cli.main",
        "worker",
        "--no-stream-jobs",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def _wait_stored(settings: Settings, n: int, timeout: float) -> None:
    last: list[object] = [None]

    def stored() -> bool:
        last[0] = served_scalar(settings, "SELECT count() FROM agentaudit.events")
        return last[0] == n

    # polling another process's progress
    await poll_until(
        stored, timeout, f"{n} events stored", interval=0.5, detail=lambda: f"{last[0]} stored"
    )


async def _wait_gone(pids: Collection[int], timeout: float) -> None:
    await poll_until(
        lambda: not any(alive(p) for p in pids),
        timeout,
        "the sink processes to exit",
        interval=0.2,
        detail=lambda: f"alive: {[p for p in pids if alive(p)]}",
    )


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal, /proc")
async def test_sink_processes_killed_mid_insert_exit_and_a_restarted_worker_ingests_everything(
    settings: Settings,
) -> None:
    """Issue 9 F: the worker SIGKILLed while its sink processes wait on an insert; they
    retried the dead endpoint forever, holding their partitions, and every restarted
    worker ingested nothing from those partitions."""
    import json
    import signal

    await ensure_topics(settings)
    first = [event_dict(tenant=f"tenant-{i % 20}") for i in range(200)]
    more = [event_dict(tenant=f"tenant-{i % 20}") for i in range(300)]
    worker = await _start_worker(settings, 2)
    restarted: asyncio.subprocess.Process | None = None
    try:
        await produce_raw(settings, [(d["tenant_id"].encode(), wire(d)) for d in first])
        await _wait_stored(settings, len(first), 120)
        children = children_of(worker.pid)
        assert len(children) == 2, children
        port = int(
            json.loads((settings.data_dir / "store.endpoint.json").read_text())["url"]
            .rsplit(":", 1)[1]
            .strip("/")
        )
        # The store endpoint stops answering: both sink processes' next inserts wait on it.
        worker.send_signal(signal.SIGSTOP)
        await produce_raw(settings, [(d["tenant_id"].encode(), wire(d)) for d in more])
        await poll_until(  # polling the kernel's socket table
            lambda: _inserts_waiting_on(port) >= 2, 60, "both inserts waiting", interval=0.1
        )
        worker.kill()  # the endpoint is gone for good, mid-insert
        await worker.wait()
        await _wait_gone(children, 30)  # before the fix: still retrying after minutes
        restarted = await _start_worker(settings, 2)
        await _wait_stored(settings, len(first) + len(more), 120)
    finally:
        for proc in (worker, restarted):
            if proc is not None and proc.returncode is None:
                proc.terminate()  # the restarted worker stops its sink processes itself
                await proc.wait()
    with open_store(settings) as store:
        assert scalar(store, "SELECT uniqExact(event_id) FROM agentaudit.events") == len(
            first
        ) + len(more)
        assert assert_chains_valid(store) == len(first) + len(more)
