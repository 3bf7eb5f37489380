"""A tenant's events on several partitions never fork its trail (issue 9 G).

Producers choose partitions: librdkafka's default partitioner and aiokafka's murmur2 put one
key on different partitions, null keys are spread, a key may disagree with the body's
tenant, a key may be binary. A chain is (tenant, partition), so whatever they do, each chain
has one sequencer: gap-free, linked, no repeated (tenant, partition, chain_seq).
"""

from __future__ import annotations

import asyncio

import pytest

from agentaudit.broker import ensure_topics
from agentaudit.settings import Settings
from agentaudit.sink.pool import SinkProcesses
from agentaudit.store import open_store
from agentaudit.store.migrations import migrate
from tests.factories import event_dict, wire
from tests.integration.helpers import assert_chains_valid, produce_placed, scalar
from tests.integration.helpers_trail import assert_signed

pytestmark = pytest.mark.integration

TENANTS = ("kf-a", "kf-b", "kf-c")


def _messages(partitions: int) -> list[tuple[int | None, bytes | None, bytes]]:
    """(partition or None for the partitioner, key, value), interleaved across tenants."""
    out: list[tuple[int | None, bytes | None, bytes]] = []
    for i in range(600):
        tenant = TENANTS[i % len(TENANTS)]
        value = wire(event_dict(tenant=tenant, kind="llm_call" if i % 2 else "tool_call"))
        match i % 5:
            case 0:
                out.append(
                    (i % partitions, tenant.encode(), value)
                )  # explicit, round the partitions
            case 1:
                out.append((None, None, value))  # null key
            case 2:
                out.append(
                    (None, TENANTS[(i + 1) % len(TENANTS)].encode(), value)
                )  # another tenant's key
            case 3:
                out.append((None, bytes([0xFF, i % 256, 0]), value))  # binary key
            case _:
                out.append((None, tenant.encode(), value))  # murmur2 on the tenant
    return out


async def test_tenants_on_every_partition_and_key_kind_verify_with_two_sink_processes(
    settings: Settings,
) -> None:
    await ensure_topics(settings)
    messages = _messages(settings.partitions)
    n = len(messages)
    with open_store(settings, own=True) as store:
        migrate(store)
        done = asyncio.Event()
        pool = SinkProcesses(
            settings, 2, on_progress=lambda: done.set() if pool.accepted >= n else None
        )
        async with pool:
            await pool.wait_ready(90)
            await produce_placed(settings, messages)
            await asyncio.wait_for(done.wait(), 120)
        assert [c.counters.accepted > 0 for c in pool.children] == [True, True], (
            "both shared the work"
        )
        spread = scalar(
            store,
            "SELECT min(p) FROM (SELECT tenant_id, uniqExact(kafka_partition) AS p "
            "FROM agentaudit.events GROUP BY tenant_id)",
        )
        assert spread == settings.partitions, "every tenant arrived on every partition"
        assert scalar(store, "SELECT count() FROM agentaudit.events") == n
        assert scalar(store, "SELECT uniqExact(event_id) FROM agentaudit.events") == n
        assert (
            scalar(
                store,
                "SELECT uniqExact(tenant_id, kafka_partition, chain_seq) FROM agentaudit.events",
            )
            == n
        )
        assert assert_chains_valid(store) == n
        # Both processes signed their chains; every row is in a checkpoint anchored outside.
        assert sum(cps[-1].size for cps in assert_signed(settings, store).values()) == n
