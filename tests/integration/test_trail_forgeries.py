"""Rows an attacker with SQL write access forges, each with every hash right (as the sink would
store them), that `agentaudit verify` must not take for the trail's own.

* Retention claims: a `retention_applied` event counts only when a signed checkpoint of its own
  chain covers its row (and the row is the one whose leaf that chain committed to). Before, any
  such row counted, also one no checkpoint covered (reported `pending`, not failing): deleting
  a chain's first rows and appending a forged claim for them verified valid ("expired by
  policy", exit 0).
* A forged chain (another tenant, same partition) has no checkpoint: its rows were `pending`
  forever whatever their `ingested_at`; now rows stored before the partition's newest sink
  checkpoint (the sink signs every chain of its partitions at each tick) are extra rows.

A small signed store written as the sink writes it (`built_store`: one chain, a checkpoint
every 10 rows), so each case takes a few seconds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from agentaudit.anchors import DirectoryAnchor
from agentaudit.keyring import KeyRing
from agentaudit.settings import Settings
from agentaudit.sink.rows import INGEST_COLUMNS, INGEST_TABLE
from agentaudit.sink.signing import CHECKPOINT_COLUMNS, CHECKPOINT_TABLE, ChainSigner
from agentaudit.sink.trees import ChainTrees, rebuild
from agentaudit.store.protocol import Store
from agentaudit.system_events import system_event
from agentaudit.trail.checkpoint import note_size
from agentaudit.trail.leaf import encode_leaf
from agentaudit.trail.merkle import leaf_hash
from agentaudit.trail.verdicts import EXPIRED, EXTRA, MISSING, PENDING, summary
from agentaudit.verify.run import public_keys, verify_store
from agentaudit_schemas.canonical import GENESIS_HASH, chain_hash
from tests.factories import event_dict, wire
from tests.integration.helpers_trail import built_store

pytestmark = pytest.mark.integration

TENANT, PART, CLAIM_PART = "bench-0", 0, 1  # built_store's one chain; the claim's chain
HORIZON = 10  # the first checkpoint's size: the prefix the attacker deletes


def _first_checkpoint_time(settings: Settings) -> int:
    note = next(
        n
        for n in DirectoryAnchor(settings.checkpoints_dir).notes(TENANT, PART)
        if note_size(n) == HORIZON
    )
    return int(next(x for x in note.split("\n") if x.startswith("time "))[5:])


def _claim(settings: Settings, store: Store, at: datetime) -> bytes:
    """A `retention_applied` event for the chain's first HORIZON rows, stored as the first row
    of another chain of the tenant (with every hash right, as the sink would store it)."""
    doc = system_event(
        "retention_applied",
        TENANT,
        {
            "days": 1,
            "held_subjects": [],
            "partitions": [PART],
            "horizons": [HORIZON],
            "horizon_days": [1],
            "floors": [0],
        },
        user_id="retention",
        now=lambda: at,
    )
    return _forge(settings, store, TENANT, CLAIM_PART, [orjson.dumps(doc)])[0]


def _forge(
    settings: Settings, store: Store, tenant: str, part: int, bodies: list[bytes]
) -> list[bytes]:
    """Rows 1.. of chain (tenant, part) with `bodies`, linked and with their leaf hashes,
    through the ingest table as the sink stores them; their leaf hashes."""
    prev, leaves, cols = GENESIS_HASH, [], []
    for seq, body in enumerate(bodies, 1):
        leaf = leaf_hash(encode_leaf(tenant, part, seq, Decimal(0), True, "", body))
        row_hash = chain_hash(prev, body)
        topic = settings.events_topic
        cols.append(
            (body, Decimal(0), True, "", topic, part, seq, 0, seq, prev, row_hash, leaf.hex())
        )
        prev = row_hash
        leaves.append(leaf)
    store.insert(INGEST_TABLE, [list(c) for c in zip(*cols, strict=True)], INGEST_COLUMNS)
    return leaves


def _sign_claim_chain(settings: Settings, store: Store, leaf: bytes) -> None:
    """What the sink does next: a signed checkpoint of the claim's chain, covering its row."""
    trees = ChainTrees()
    trees.extend([(TENANT, CLAIM_PART, leaf)])
    signer = ChainSigner(KeyRing.load(settings.key_dir).signer, settings.deployment)
    made = signer.sign(trees, datetime.now(UTC))
    DirectoryAnchor(settings.checkpoints_dir).append(
        (c.tenant_id, c.partition, c.note, c.signed_at) for c in made
    )
    store.insert(
        CHECKPOINT_TABLE,
        [list(c) for c in zip(*(c.row for c in made), strict=True)],
        CHECKPOINT_COLUMNS,
    )


def _verdicts(settings: Settings, store: Store) -> tuple[bool, set[tuple[str, str]]]:
    reports = verify_store(settings, store, public_keys(settings), derived=False)
    lines = {(r.origin.rsplit("/", 1)[1], ln.verdict) for r in reports for ln in r.lines}
    return summary(reports)[1], lines


def test_a_forged_unsigned_retention_claim_does_not_excuse_deleted_rows(tmp_path: Path) -> None:
    with built_store(tmp_path, 30, 1, every=10) as (settings, store):
        signed_at = _first_checkpoint_time(settings)
        store.command(
            "ALTER TABLE agentaudit.events DELETE WHERE tenant_id = {t:String} AND "
            "kafka_partition = {p:UInt32} AND chain_seq <= {h:UInt64} SETTINGS mutations_sync = 2",
            {"t": TENANT, "p": PART, "h": HORIZON},
        )
        at = datetime.fromtimestamp(signed_at, UTC) + timedelta(days=2)
        leaf = _claim(settings, store, at)

        ok, lines = _verdicts(settings, store)
        assert not ok, lines  # was: valid, the deleted rows "expired by policy"
        assert (f"p{PART}", MISSING) in lines and (f"p{PART}", EXPIRED) not in lines
        assert (f"p{CLAIM_PART}", PENDING) in lines

        # Once a checkpoint of its chain covers the claim, it is the trail's own: it counts.
        _sign_claim_chain(settings, store, leaf)
        ok, lines = _verdicts(settings, store)
        assert ok, lines
        assert (f"p{PART}", EXPIRED) in lines and (f"p{PART}", MISSING) not in lines


def test_a_forged_chain_stored_before_its_partitions_last_tick_is_extra(tmp_path: Path) -> None:
    with built_store(tmp_path, 30, 1, every=10) as (settings, store):
        forged = "forged"
        bodies = [wire(event_dict(tenant=forged, kind="tool_call")) for _ in range(3)]
        _forge(settings, store, forged, PART, bodies)
        ok, lines = _verdicts(settings, store)
        assert ok and (f"p{PART}", PENDING) in lines, lines  # stored after the last tick
        # Dated before the partition's newest checkpoint, which would then have covered it.
        store.command(
            "ALTER TABLE agentaudit.events UPDATE ingested_at = ingested_at - INTERVAL 1 HOUR "
            "WHERE tenant_id = {t:String} SETTINGS mutations_sync = 2",
            {"t": forged},
        )
        ok, lines = _verdicts(settings, store)
        assert not ok, lines  # was: valid, 3 rows pending
        assert (f"p{PART}", EXTRA) in lines and (f"p{PART}", PENDING) not in lines


def test_a_sink_taking_over_a_handed_off_partition_does_not_sign_a_forged_chain(
    tmp_path: Path,
) -> None:
    """The sink would have blessed the forged chain: on assignment it rebuilt every chain the
    store holds and signed those without an anchored checkpoint as they were."""
    with built_store(tmp_path, 30, 1, every=10) as (settings, store):
        anchor = DirectoryAnchor(settings.checkpoints_dir)
        ring = KeyRing.load(settings.key_dir)

        def rebuilt() -> ChainTrees:
            heads = {
                (str(t), int(p)): (int(n), "")
                for t, p, n in store.query(
                    "SELECT tenant_id, kafka_partition, max(chain_seq) FROM agentaudit.events "
                    "GROUP BY tenant_id, kafka_partition"
                ).result_rows
            }
            topic, parts = settings.events_topic, [PART]
            return rebuild(store, topic, parts, heads, anchor, ring.verifiers, settings.deployment)

        # The owner gives the partition up cleanly (a second after its last tick).
        handoff = ChainSigner(ring.signer, settings.deployment).sign(
            rebuilt(), datetime.now(UTC) + timedelta(seconds=2), handoff=True
        )
        anchor.append((c.tenant_id, c.partition, c.note, c.signed_at) for c in handoff)
        _forge(settings, store, "forged", PART, [wire(event_dict(tenant="forged"))])

        trees = rebuilt()
        assert ("forged", PART) in trees.unsigned, trees.unsigned  # was: signed next tick
        assert "no sink wrote them" in trees.unsigned[("forged", PART)]
        assert (TENANT, PART) not in trees.unsigned and (TENANT, PART) in trees.trees
