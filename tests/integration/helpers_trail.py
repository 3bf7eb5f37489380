"""Checks of a signed trail shared by the integration tests (issue 10)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path

from agentaudit.anchors import DirectoryAnchor
from agentaudit.keyring import KeyRing
from agentaudit.settings import Settings
from agentaudit.sink.rows import INGEST_COLUMNS, INGEST_TABLE
from agentaudit.sink.worker import SinkWorker
from agentaudit.store.protocol import Store
from agentaudit.trail.checkpoint import Checkpoint, open_checkpoint, origin_for
from agentaudit.trail.leaf import encode_leaf
from agentaudit.trail.merkle import leaf_hash, root_from_leaf_hashes
from agentaudit_schemas.canonical import GENESIS_HASH, chain_hash
from tests.helpers_wait import poll_until


def recomputed_leaves(store: Store) -> dict[tuple[str, int], list[bytes]]:
    """Every chain's leaf hashes recomputed from the rows' content, in chain order."""
    rows = store.query(
        "SELECT tenant_id, kafka_partition, chain_seq, cost_usd, priced, pricing_version, payload, "
        "leaf_hash FROM agentaudit.events ORDER BY tenant_id, kafka_partition, chain_seq"
    ).result_rows
    out: dict[tuple[str, int], list[bytes]] = {}
    for t, p, seq, cost, priced, version, payload, stored in rows:
        body = payload if isinstance(payload, bytes) else payload.encode()
        h = leaf_hash(encode_leaf(t, p, seq, Decimal(cost), bool(priced), version, body))
        stored = stored.decode() if isinstance(stored, bytes) else stored
        assert stored == h.hex(), f"stored leaf_hash of {t}/p{p} #{seq} is not the row's leaf"
        chain = out.setdefault((t, p), [])
        assert seq == len(chain) + 1
        chain.append(h)
    return out


def anchored_checkpoints(settings: Settings, key: tuple[str, int]) -> list[Checkpoint]:
    ring = KeyRing.load(settings.key_dir)
    origin = origin_for(settings.deployment, *key)
    notes = DirectoryAnchor(settings.checkpoints_dir).notes(*key)
    return [open_checkpoint(n, ring.verifiers(origin), origin)[0] for n in notes]


def assert_signed(settings: Settings, store: Store) -> dict[tuple[str, int], list[Checkpoint]]:
    """Every chain's anchored checkpoints verify, each root is the root of the rows' first
    `size` leaves, the newest covers every row, and the table holds the same notes."""
    leaves = recomputed_leaves(store)
    assert leaves, "no rows"
    out = {}
    for key, hashes in leaves.items():
        cps = anchored_checkpoints(settings, key)
        assert cps, f"chain {key} has no anchored checkpoint"
        for cp in cps:
            assert cp.size <= len(hashes)
            assert cp.root_hash == root_from_leaf_hashes(hashes[: cp.size]), f"{key} @ {cp.size}"
            assert any(e.startswith("time ") for e in cp.extensions)
        assert cps[-1].size == len(hashes), f"{key}: newest checkpoint does not cover every row"
        table = store.query(
            "SELECT note FROM agentaudit.checkpoints WHERE tenant_id = {t:String} "
            "AND kafka_partition = {p:UInt32} ORDER BY signed_at",
            {"t": key[0], "p": key[1]},
        ).result_rows
        anchored = DirectoryAnchor(settings.checkpoints_dir).notes(*key)
        assert sorted(r[0] for r in table) == sorted(anchored), f"{key}: table and anchor differ"
        out[key] = cps
    return out


class RunningSink:
    """An in-process sink running in the background; `wait` polls its counters."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.worker = SinkWorker(settings, store)
        self.task = asyncio.create_task(self.worker.run())

    @property
    def accepted(self) -> int:
        return self.worker.processor.counters.accepted

    @property
    def signed(self) -> int:
        return self.worker.checkpoints_signed

    async def wait(self, accepted: int = 0, signed: int = 0, timeout: float = 60) -> None:
        """Until at least `accepted` events are stored and `signed` checkpoints signed."""
        await poll_until(
            lambda: self.accepted >= accepted and self.signed >= signed,
            timeout,
            f"{accepted} events stored and {signed} checkpoints signed",
            check=lambda: self.task.result() if self.task.done() else None,
            detail=lambda: f"{self.worker.processor.counters}, {self.signed} signed",
        )

    async def stop(self) -> None:
        self.worker.stop()
        await self.task


@contextlib.asynccontextmanager
async def running_sink(settings: Settings, store: Store) -> AsyncIterator[RunningSink]:
    """A sink that runs for the `async with` block and stops cleanly (a handoff) after it."""
    sink = RunningSink(settings, store)
    try:
        yield sink
    finally:
        await sink.stop()


@contextlib.contextmanager
def built_store(
    tmp_path: Path, rows: int, chains: int, every: int
) -> Iterator[tuple[Settings, Store]]:
    """A fresh owned store with a signing key and `build_signed_store`'s trail in it."""
    from agentaudit.bench.trail_measure import build_signed_store
    from agentaudit.keyring import init_keys
    from agentaudit.store import open_store
    from agentaudit.store.migrations import migrate

    settings = Settings(data_dir=tmp_path / "data", key_dir=tmp_path / "keys", partitions=3)
    init_keys(settings.key_dir)
    with open_store(settings, own=True) as store:
        migrate(store)
        build_signed_store(settings, store, rows, chains, every=every)
        yield settings, store


def stored_chain(
    settings: Settings,
    store: Store,
    tenant: str,
    part: int,
    bodies: list[bytes],
    start: int = 1,
    prev: str = GENESIS_HASH,
) -> list[tuple[bytes, str]]:
    """Rows start.. of chain (tenant, part) with `bodies`, linked (to `prev`) and with their
    leaf hashes, through the ingest table as the sink stores them; (leaf hash, row hash) each."""
    leaves, cols = [], []
    for seq, body in enumerate(bodies, start):
        leaf = leaf_hash(encode_leaf(tenant, part, seq, Decimal(0), True, "", body))
        row_hash = chain_hash(prev, body)
        topic = settings.events_topic
        cols.append(
            (body, Decimal(0), True, "", topic, part, seq, 0, seq, prev, row_hash, leaf.hex(), 0)
        )
        prev = row_hash
        leaves.append((leaf, row_hash))
    store.insert(INGEST_TABLE, [list(c) for c in zip(*cols, strict=True)], INGEST_COLUMNS)
    return leaves
