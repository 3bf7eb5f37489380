"""The sink split over processes: partitions shared in one consumer group, one store owner."""

from __future__ import annotations

import asyncio

import pytest

from agentaudit.broker import ensure_topics
from agentaudit.settings import Settings
from agentaudit.sink.pool import SinkProcesses
from agentaudit.store import open_store
from agentaudit.store.migrations import migrate
from tests.factories import event_dict, wire
from tests.integration.helpers import assert_chains_valid, produce_raw, scalar

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
            settings, 2,
            on_progress=lambda: done.set() if pool.accepted + pool.totals().dead_lettered >= n + 3 else None,
        )  # fmt: skip
        async with pool:
            await pool.wait_ready(90)
            await produce_raw(settings, [(d["tenant_id"].encode(), wire(d)) for d in docs] + junk)
            await asyncio.wait_for(done.wait(), 120)
        assert all(child.proc.returncode == 0 for child in pool.children)
        assert [c.counters.accepted > 0 for c in pool.children] == [True, True], "both shared the work"
        assert scalar(store, "SELECT count() FROM agentaudit.events") == n
        assert scalar(store, "SELECT uniqExact(event_id) FROM agentaudit.events") == n
        assert scalar(store, "SELECT count() FROM agentaudit.dead_letters") == 3
        assert assert_chains_valid(store) == n


def test_a_sink_process_needs_a_running_store_owner(settings: Settings) -> None:
    from agentaudit.errors import StoreUnavailable

    with pytest.raises(StoreUnavailable, match="no process serves"), open_store(settings, attach=True):
        pass
