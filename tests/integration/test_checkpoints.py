"""The sink signs every chain's checkpoint and anchors it outside the store (issue 10).

Real broker, real chDB, the real key ring. Each test checks the signed notes against the
rows the store holds, recomputing every leaf from the row's content (not the stored
`leaf_hash`), so a sink that signed the wrong tree fails here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest

from agentaudit.anchors import DirectoryAnchor
from agentaudit.broker import ensure_topics
from agentaudit.settings import Settings
from agentaudit.sink.rows import INGEST_COLUMNS, INGEST_TABLE
from agentaudit.sink.worker import SinkWorker
from agentaudit.store import open_store
from agentaudit.store.migrations import migrate
from agentaudit.store.protocol import Store
from agentaudit.trail.checkpoint import origin_for
from agentaudit.trail.leaf import encode_leaf
from agentaudit.trail.merkle import leaf_hash
from tests.factories import event_dict, wire
from tests.integration.helpers import produce_raw, scalar, sink_until
from tests.integration.helpers_trail import anchored_checkpoints, assert_signed, running_sink

pytestmark = pytest.mark.integration

TENANTS = ("cp-a", "cp-b")


def _signed(settings: Settings) -> Settings:
    return settings.model_copy(update={"checkpoint_interval_s": 0.2})


@contextlib.asynccontextmanager
async def _migrated(settings: Settings) -> AsyncIterator[Store]:
    """The settings' topics, and their store migrated and owned here."""
    await ensure_topics(settings)
    with open_store(settings, own=True) as store:
        migrate(store)
        yield store


def _events(n: int, offset: int = 0) -> list[tuple[bytes, bytes]]:
    return [
        (TENANTS[i % 2].encode(), wire(event_dict(tenant=TENANTS[i % 2], kind="llm_call")))
        for i in range(offset, offset + n)
    ]


async def _sink(settings: Settings, store: Store, total: int) -> SinkWorker:
    return await sink_until(settings, store, lambda w: w.processor.counters.accepted >= total)


async def test_every_chain_is_signed_anchored_and_grows_consistently(settings: Settings) -> None:
    settings = _signed(settings)
    async with _migrated(settings) as store:
        await produce_raw(settings, _events(200))
        first = await _sink(settings, store, 200)
        assert first.checkpoints_signed >= 2
        before = assert_signed(settings, store)
        assert all("handoff" in cps[-1].extensions for cps in before.values()), (
            "stop signs a handoff"
        )
        # A second sink (a restart) resumes the trees from the store and the anchor.
        await produce_raw(settings, _events(100, 200))
        await _sink(settings, store, 100)
        after = assert_signed(settings, store)
        for key, cps in after.items():
            sizes = [c.size for c in cps]
            assert sizes == sorted(sizes), f"{key}: a checkpoint signed a smaller tree later"
            assert cps[-1].size > before[key][-1].size
        total = scalar(store, "SELECT count() FROM agentaudit.events")
        assert total == 300 == sum(c[-1].size for c in after.values())


async def test_unchanged_chains_are_signed_again_each_interval(settings: Settings) -> None:
    settings = _signed(settings)
    async with _migrated(settings) as store:
        await produce_raw(settings, _events(10))
        async with running_sink(settings, store) as sink:
            await sink.wait(accepted=10, signed=10)
        for key, cps in assert_signed(settings, store).items():
            assert len(cps) >= 3 and len({c.size for c in cps[-3:]}) == 1, f"{key}: not re-signed"


async def test_a_store_behind_its_anchored_checkpoints_is_never_signed_again(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _signed(settings)
    async with _migrated(settings) as store:
        await produce_raw(settings, _events(40))
        await _sink(settings, store, 40)
        signed = assert_signed(settings, store)
        (tenant, part), cps = min(signed.items())
        size = cps[-1].size
        # Tail rows deleted behind the sink's back (or a store restored from an old copy).
        store.command(
            "ALTER TABLE agentaudit.events DELETE WHERE tenant_id = {t:String} AND "
            "kafka_partition = {p:UInt32} AND chain_seq > {s:UInt64} SETTINGS mutations_sync = 2",
            {"t": tenant, "p": part, "s": size - 3},
        )
        caplog.set_level(logging.ERROR, logger="agentaudit.sink")
        await produce_raw(settings, _events(40, 40))
        await _sink(settings, store, 40)
        assert anchored_checkpoints(settings, (tenant, part))[-1].size == size, (
            "the shortened chain was signed"
        )
        assert any(
            "will not be signed" in r.getMessage() and tenant in r.getMessage()
            for r in caplog.records
        )
        others = [k for k in signed if k != (tenant, part)]
        assert others and all(
            anchored_checkpoints(settings, k)[-1].size > signed[k][-1].size for k in others
        )


async def test_a_row_appended_after_a_handoff_is_never_signed(settings: Settings) -> None:
    settings = _signed(settings)
    async with _migrated(settings) as store:
        await produce_raw(settings, _events(20))
        await _sink(settings, store, 20)
        (tenant, part), cps = min(assert_signed(settings, store).items())
        # A forged row with every hash recomputed, inserted straight into the store.
        last = store.query(
            "SELECT chain_seq, row_hash, payload FROM agentaudit.events WHERE tenant_id = "
            "{t:String} "
            "AND kafka_partition = {p:UInt32} ORDER BY chain_seq DESC LIMIT 1",
            {"t": tenant, "p": part},
        ).result_rows[0]
        forged = wire(event_dict(tenant=tenant, kind="tool_call"))
        from agentaudit_schemas.canonical import chain_hash

        prev = last[1].decode() if isinstance(last[1], bytes) else last[1]
        seq = int(last[0]) + 1
        lh = leaf_hash(encode_leaf(tenant, part, seq, Decimal(0), True, "", forged)).hex()
        store.insert(
            INGEST_TABLE,
            [
                [forged],
                [Decimal(0)],
                [True],
                [""],
                [settings.events_topic],
                [part],
                [10**9],
                [0],
                [seq],
                [prev],
                [chain_hash(prev, forged)],
                [lh],
                [0],
            ],
            INGEST_COLUMNS,
        )
        await produce_raw(settings, _events(20, 20))
        await _sink(settings, store, 20)
        assert all(c.size <= cps[-1].size for c in anchored_checkpoints(settings, (tenant, part)))


async def test_a_running_sink_signs_with_the_new_key_after_a_rotation(
    settings: Settings, tmp_path: Path
) -> None:
    from agentaudit.keyring import init_keys, rotate_keys
    from agentaudit.trail.note import open_note

    settings = _signed(settings).model_copy(update={"key_dir": tmp_path / "own-keys"})
    old = init_keys(settings.key_dir)
    await ensure_topics(settings)
    with open_store(settings, own=True) as store:
        migrate(store)
        await produce_raw(settings, _events(10))
        async with running_sink(settings, store) as sink:
            await sink.wait(accepted=10, signed=4)
            new = rotate_keys(settings.key_dir)
            await sink.wait(signed=sink.signed + 4)
        signed = assert_signed(settings, store)  # old and new checkpoints verify with the history
        key = min(signed)
        origin = origin_for(settings.deployment, *key)
        notes = DirectoryAnchor(settings.checkpoints_dir).notes(*key)
        by = [open_note(n, new.verifiers(origin)).verified[0].key_id for n in notes]
        ids = {old.current.key_id(origin), new.current.key_id(origin)}
        assert set(by) == ids and by[-1] == new.current.key_id(origin)


async def test_an_ended_tenant_is_not_signed_again_while_the_sink_runs(settings: Settings) -> None:
    from agentaudit.trail_end import end_tenant

    settings = _signed(settings)
    async with _migrated(settings) as store:
        await produce_raw(settings, _events(20))
        async with running_sink(settings, store) as sink:
            await sink.wait(accepted=20, signed=4)
            ended = await asyncio.to_thread(end_tenant, settings, store, "cp-a")
            assert ended and all(e.size > 0 for e in ended)
            # The sink learns of the end at its next tick; events still arriving are stored.
            await sink.wait(signed=sink.signed + 4)
            await produce_raw(settings, _events(20, 20))
            await sink.wait(accepted=40)
        for e in ended:
            cps = anchored_checkpoints(settings, e.chain)
            at = next(i for i, c in enumerate(cps) if "end" in c.extensions)
            assert cps[at].size == e.size
            assert all(c.size == e.size for c in cps[at:]), "a chain was signed past its end"
            rows = scalar(
                store,
                "SELECT count() FROM agentaudit.events WHERE tenant_id = 'cp-a' "
                f"AND kafka_partition = {e.chain[1]}",
            )
            assert rows > e.size, "events after the end are stored, not dropped"
        other = [(k, n) for k, n in assert_signed_keys(store) if k[0] == "cp-b"]
        assert other and all(anchored_checkpoints(settings, k)[-1].size == n for k, n in other)


def assert_signed_keys(store: Store) -> list[tuple[tuple[str, int], int]]:
    rows = store.query(
        "SELECT tenant_id, kafka_partition, count() FROM agentaudit.events "
        "GROUP BY tenant_id, kafka_partition"
    ).result_rows
    return [((str(t), int(p)), int(n)) for t, p, n in rows]
