"""Rows forged in a chain's unsigned tail after a sink crash are not signed by the next owner.

A sink that dies without a handoff leaves rows no checkpoint covers. Before, the next owner
rebuilt each chain from the store and signed whatever it held: a row inserted, edited or
deleted (every hash recomputed, as anyone with SQL write access can) in that window was signed
as the trail's own. Now the next owner checks each tail row against the Kafka record at its
offset first (`agentaudit.sink.tailcheck`). Real broker, real chDB, content sealing on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY

from agentaudit.broker import ensure_topics
from agentaudit.errors import UserError
from agentaudit.settings import Settings
from agentaudit.sink.decode import decode
from agentaudit.sink.rows import INGEST_TABLE
from agentaudit.sink.tailcheck import PartitionCheck, Record, content_differs
from agentaudit.sink.trees import Tail
from agentaudit.sink.worker import SinkWorker
from agentaudit.store import open_store
from agentaudit.store.migrations import migrate
from agentaudit.store.protocol import Store
from agentaudit.store.protocol import column_text as _text
from agentaudit.subjects.keystore import SubjectKeyStore
from agentaudit.trail.leaf import encode_leaf
from agentaudit.trail.merkle import CompactTree, leaf_hash
from agentaudit.trail.verdicts import summary
from agentaudit.trail_end import end_tenant
from agentaudit.verify.run import public_keys, verify_store
from agentaudit_schemas.canonical import chain_hash, document_bytes
from tests.factories import event_dict, wire
from tests.faults.conftest import FULL
from tests.helpers_wait import poll_until
from tests.integration.helpers import produce_raw, sink_until
from tests.integration.helpers_trail import anchored_checkpoints

pytestmark = pytest.mark.integration

GOOD, FORGE, EDIT, DELETE = "tail-good", "tail-forge", "tail-edit", "tail-delete"
TENANTS = (GOOD, FORGE, EDIT, DELETE)
NEW, CUT, GONE = "tail-new", "tail-cut", "tail-gone"
WIPE = "tail-wipe"
CRASHED = (WIPE, *TENANTS)
"""The crash test's tenants; WIPE first in each round, so its partition's other chains (the
local broker puts it on GOOD's and FORGE's) are ahead of it: its deleted events are not read
again on their own."""
# Explicit, so a column added to the ingest table later keeps its default here.
COLUMNS = (
    "payload",
    "cost_usd",
    "priced",
    "pricing_version",
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
    "log_epoch",
    "chain_seq",
    "prev_hash",
    "row_hash",
    "leaf_hash",
)


def _events(per_tenant: int) -> list[tuple[bytes, bytes]]:
    out = []
    for i in range(per_tenant):
        for tenant in CRASHED:
            doc = event_dict(tenant=tenant)
            doc["attributes"] = {"customer": f"c{i}"}  # sealed by the sink: compared opened
            out.append((tenant.encode(), wire(doc)))
    return out


def _chain(store: Store, tenant: str) -> tuple[int, list[tuple[Any, ...]]]:
    """The tenant's one partition and its rows (seq, payload, offset, prev, row hash)."""
    rows = store.query(
        "SELECT kafka_partition, chain_seq, payload, kafka_offset, prev_hash, row_hash "
        "FROM agentaudit.events WHERE tenant_id = {t:String} ORDER BY chain_seq",
        {"t": tenant},
    ).result_rows
    assert len({r[0] for r in rows}) == 1
    return int(rows[0][0]), [(int(r[1]), r[2], int(r[3]), _text(r[4]), _text(r[5])) for r in rows]


def _rewrite_tail(
    settings: Settings, store: Store, tenant: str, after: int, tail: list[tuple[bytes, int]]
) -> None:
    """Replace the chain's rows after `after` by (payload, offset)s, every hash right."""
    part, rows = _chain(store, tenant)
    prev = rows[after - 1][4]
    store.command(
        "ALTER TABLE agentaudit.events DELETE WHERE tenant_id = {t:String} AND chain_seq > "
        "{s:UInt64} SETTINGS mutations_sync = 2",
        {"t": tenant, "s": after},
    )
    cols = []
    for seq, (body, offset) in enumerate(tail, after + 1):
        leaf = leaf_hash(encode_leaf(tenant, part, seq, Decimal(0), True, "", body)).hex()
        row_hash = chain_hash(prev, body)
        topic = settings.events_topic
        cols.append((body, Decimal(0), True, "", topic, part, offset, 0, seq, prev, row_hash, leaf))
        prev = row_hash
    if cols:
        store.insert(INGEST_TABLE, [list(c) for c in zip(*cols, strict=True)], COLUMNS)


def _tamper(
    settings: Settings,
    store: Store,
    signed: int,
    forged_offset: int | None = None,
    *,
    wipe: bool = False,
) -> None:
    """A forged row appended (at `forged_offset`, default: its last row's), a row's content
    edited, a row deleted (the rest renumbered); with `wipe`, every row after `signed` of
    WIPE deleted."""
    for tenant in (FORGE, EDIT, DELETE, *((WIPE,) if wipe else ())):
        _, rows = _chain(store, tenant)
        tail = [(r[1] if isinstance(r[1], bytes) else r[1].encode(), r[2]) for r in rows[signed:]]
        if tenant == FORGE:
            at = tail[-1][1] if forged_offset is None else forged_offset
            tail.append((document_bytes(event_dict(tenant=FORGE)), at))
        elif tenant == EDIT:
            doc = orjson.loads(tail[3][0])
            doc["payload"]["tool"] = "wire_transfer"
            tail[3] = (document_bytes(doc), tail[3][1])
        elif tenant == DELETE:
            del tail[2]
        else:
            tail = []
        _rewrite_tail(settings, store, tenant, signed, tail)


def _refused() -> float:
    """The /metrics counter of chains refused as forged (the default registry, served)."""
    labels = {"verdict": "forged"}
    return REGISTRY.get_sample_value("agentaudit_trail_tail_chains_refused_total", labels) or 0.0


async def _crash_after(settings: Settings, store: Store, stored: int) -> None:
    """A sink that stores `stored` events and dies: no handoff checkpoint."""
    worker = SinkWorker(settings, store)
    task = asyncio.create_task(worker.run())
    await poll_until(
        lambda: worker.processor.counters.events_stored >= stored,
        60,
        f"{stored} events stored",
        check=lambda: task.result() if task.done() else None,
    )
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@pytest.mark.faults
@pytest.mark.skipif(not FULL, reason="~40 s, three group joins: ./run faults")
async def test_forged_edited_and_deleted_tail_rows_are_not_signed_after_a_crash(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings.model_copy(update={"checkpoint_interval_s": 3600.0})
    await ensure_topics(settings)
    with open_store(settings, own=True) as store:
        migrate(store)
        await produce_raw(settings, _events(4))
        await sink_until(settings, store, lambda w: w.processor.counters.events_stored >= 20)
        # The next owner signs every chain at 4 on takeover, stores 4 more each and dies.
        await produce_raw(settings, _events(4))
        await _crash_after(settings, store, 20)
        assert {
            anchored_checkpoints(settings, (t, _chain(store, t)[0]))[-1].size for t in CRASHED
        } == {4}
        part = _chain(store, WIPE)[0]
        _tamper(settings, store, 4, wipe=True)
        with pytest.raises(UserError, match=r"not ended: p\d: row 9: Kafka holds no event"):
            await asyncio.to_thread(end_tenant, settings, store, FORGE)
        refused = _refused()
        caplog.set_level(logging.INFO, logger="agentaudit.sink")
        await produce_raw(settings, _events(2))
        await sink_until(  # the check runs beside consuming: until it is done
            settings,
            store,
            lambda w: w.processor.counters.events_stored >= 10 and not w.trees.tails,
        )

        newest = {t: anchored_checkpoints(settings, (t, _chain(store, t)[0])) for t in TENANTS}
        newest[WIPE] = anchored_checkpoints(settings, (WIPE, part))
        sizes = {t: max(c.size for c in cps) for t, cps in newest.items()}
        # Genuine: every row signed (4 + 4 checked + 2 new). Tampered: signed up to the last
        # good row (forged 9th: 8; edited 4th of the tail: 7; deleted 3rd: 6; all 4 after the
        # checkpoint deleted: 4), never past it.
        assert sizes == {GOOD: 10, FORGE: 8, EDIT: 7, DELETE: 6, WIPE: 4}, sizes
        rows = {t: len(_chain(store, t)[1]) for t in CRASHED}
        assert rows == {GOOD: 10, FORGE: 11, EDIT: 10, DELETE: 9, WIPE: 6}, rows  # ingest went on
        critical = [r.getMessage() for r in caplog.records if r.levelno == logging.CRITICAL]
        for tenant, seq in ((FORGE, 9), (EDIT, 8), (DELETE, 7), (WIPE, 5)):
            assert any(f"chain {tenant}/p" in m and f"row {seq} " in m for m in critical), critical
        assert _refused() == refused + 4
        reports = verify_store(settings, store, public_keys(settings), derived=False)
        assert summary(reports)[1] is False, "verify says valid over forged rows"


def _tail_of(store: Store, tenant: str, signed: int) -> tuple[int, Tail]:
    part, rows = _chain(store, tenant)
    tree = CompactTree()
    head = CompactTree()
    for seq, body, *_ in rows:
        body = body if isinstance(body, bytes) else body.encode()
        h = leaf_hash(encode_leaf(tenant, part, seq, Decimal(0), True, "", body))
        if seq <= signed:
            tree.append_hash(h)
        head.append_hash(h)
    return part, Tail(tree, len(rows), head.root())


def _good_check(store: Store, settings: Settings, *, epoch: int) -> PartitionCheck:
    """GOOD's chain on partition 0 from its 2nd (signed) row, read at log `epoch`."""
    return PartitionCheck(
        store,
        settings.events_topic,
        0,
        epoch,
        {(GOOD, 0): _tail_of(store, GOOD, 2)[1]},
        {(GOOD, 0): 2},
        None,
        max_skew_ms=900_000,
        keys=None,
    )


def test_a_tail_is_checked_row_by_row_against_the_records(tmp_path: Path) -> None:
    """The walk itself, fed records as Kafka would give them (fast, no broker): a genuine tail
    passes; one forged row, one edited row, one deleted row each stop the chain there."""
    from tests.conftest import isolated_settings

    settings = isolated_settings("127.0.0.1:9", tmp_path)
    records: list[Record] = []
    with open_store(settings, own=True) as store:
        migrate(store)
        offset = 0
        # NEW: a chain none of whose rows a checkpoint covers (its first row after the crash);
        # CUT: both rows after its checkpoint deleted; GONE: a new chain, every row deleted.
        for tenant in (*TENANTS, NEW, CUT, GONE):
            tail = []
            for _ in range(6 if tenant not in (NEW, GONE) else 3):
                body = wire(event_dict(tenant=tenant))
                records.append(Record(offset, 0, body))
                tail.append((decode(body).canonical, offset))  # type: ignore[union-attr]
                offset += 1
            # Rows 1-2 signed; after them: one forged, one edited, one deleted (the rest
            # renumbered), every hash right.
            if tenant == FORGE:
                tail.append((document_bytes(event_dict(tenant=FORGE)), 10**6))
            elif tenant == EDIT:
                doc = orjson.loads(tail[5][0])
                doc["payload"]["tool"] = "wire_transfer"
                tail[5] = (document_bytes(doc), tail[5][1])
            elif tenant == DELETE:
                del tail[4]
            elif tenant == CUT:
                del tail[2:]
            if tenant != GONE:
                _stored_chain(settings, store, tenant, tail)
        check = PartitionCheck(
            store,
            settings.events_topic,
            0,
            0,
            {(t, 0): _tail_of(store, t, 0 if t == NEW else 2)[1] for t in (*TENANTS, NEW, CUT)},
            {(t, 0): 2 for t in (*TENANTS, CUT)},
            {*TENANTS, NEW, CUT},
            max_skew_ms=900_000,
            keys=None,
        )
        assert check.low == 1  # the first chain's 2nd (signed) row: its offset is checked too
        # A re-send of a GOOD event (the sink dropped it: its id is stored): not a lost row.
        records.append(Record(records[-1].offset + 1, 0, records[3].value))
        check.feed(records[check.low :])
        out = {o.key[0]: (o.bad_seq, o.tree.size, o.checked) for o in check.finish()}
        assert out == {
            GOOD: (None, 6, 4),
            FORGE: (7, 6, 4),
            EDIT: (6, 5, 3),
            DELETE: (5, 4, 2),
            NEW: (None, 3, 3),
            CUT: (3, 2, 0),
            GONE: (1, 0, 0),
        }, out
        assert check.floor == 29  # past CUT's signed 2nd row, the newest covered offset
        # The partition's log was replaced (epoch 1) since GOOD's rows: they cannot be checked,
        # which is not found forged (no checkpoint up to the row before is signed for it).
        newer = _good_check(store, settings, epoch=1)
        newer.feed(records)
        (old_log,) = newer.finish()
        assert (old_log.bad_seq, old_log.unreadable) == (3, True), old_log

        # A signed row's kafka_offset (in no leaf) moved onto another chain's record, so that
        # the read would start past the tail: no walk is trusted, nothing is signed past it.
        store.command(
            "ALTER TABLE agentaudit.events UPDATE kafka_offset = 7 WHERE tenant_id = {t:String} "
            "AND chain_seq = 2 SETTINGS mutations_sync = 2",
            {"t": GOOD},
        )
        moved = _good_check(store, settings, epoch=0)
        moved.feed(records[moved.low :])
        (out_moved,) = moved.finish()
        assert out_moved.bad is not None and "kafka_offset values" in out_moved.bad, out_moved
        assert out_moved.tree.size == 2


def _stored_chain(
    settings: Settings, store: Store, tenant: str, tail: list[tuple[bytes, int]]
) -> None:
    """A chain (on partition 0) stored as the sink stores it."""
    prev = "0" * 64
    cols = []
    for seq, (body, offset) in enumerate(tail, 1):
        leaf = leaf_hash(encode_leaf(tenant, 0, seq, Decimal(0), True, "", body)).hex()
        row_hash = chain_hash(prev, body)
        cols.append(
            (
                body,
                Decimal(0),
                True,
                "",
                settings.events_topic,
                0,
                offset,
                0,
                seq,
                prev,
                row_hash,
                leaf,
            )
        )
        prev = row_hash
    store.insert(INGEST_TABLE, [list(c) for c in zip(*cols, strict=True)], COLUMNS)


def test_sealed_content_is_compared_opened(tmp_path: Path) -> None:
    """A sealed attribute is opened with its key and compared: the same value passes, another
    value (sealed as the sink would, with the subject's key) does not."""
    from agentaudit.subjects.seal import Sealer
    from tests.conftest import isolated_settings

    settings = isolated_settings("127.0.0.1:9", tmp_path)
    keys = SubjectKeyStore.from_settings(settings)
    doc = event_dict(tenant="seal")
    doc["attributes"] = {"customer": "alice"}
    accepted = decode(wire(doc))
    sealer = Sealer(keys)
    stored = sealer(orjson.loads(accepted.canonical), accepted.canonical)  # type: ignore[union-attr]
    assert stored != accepted.canonical  # type: ignore[union-attr]
    assert content_differs(stored, accepted, keys) is None  # type: ignore[arg-type]
    other = dict(doc, attributes={"customer": "mallory"})
    forged = decode(wire(other))
    forged_stored = sealer(orjson.loads(forged.canonical), forged.canonical)  # type: ignore[union-attr]
    assert content_differs(forged_stored, accepted, keys) is not None  # type: ignore[arg-type]


def test_a_partition_with_a_held_tail_is_not_handed_off() -> None:
    """A sink that gives partitions up before its tail check ended must not state `handoff` for
    them: the next owner then checks the tail itself (and a held chain with no checkpoint
    would look forged to it after a handoff)."""
    from datetime import UTC, datetime

    from agentaudit.keyring import KeyRing
    from agentaudit.sink.signing import ChainSigner
    from agentaudit.sink.trees import ChainTrees

    trees = ChainTrees()
    trees.extend([("a", 0, b"\x01" * 32), ("b", 1, b"\x02" * 32), ("c", 1, b"\x03" * 32)])
    trees.tails[("c", 1)] = Tail(CompactTree(), 1, trees.trees[("c", 1)].root())
    import os

    signer = ChainSigner(KeyRing.load(Path(os.environ["AGENTAUDIT_KEY_DIR"])).signer, "test")
    made = {
        (c.tenant_id, c.partition): c.note
        for c in signer.sign(trees, datetime.now(UTC), handoff=True)
    }
    assert set(made) == {("a", 0), ("b", 1)}  # the held chain is not signed
    assert "\nhandoff\n" in made[("a", 0)]
    assert "handoff" not in made[("b", 1)]
