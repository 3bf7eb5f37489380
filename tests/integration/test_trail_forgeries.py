"""Rows an attacker with SQL write access forges, each with every hash right (as the sink would
store them), that `agentaudit verify` must not take for the trail's own.

* Retention claims: a `retention_applied` event counts only when a signed checkpoint of its own
  chain covers its row (and the row is the one whose leaf that chain committed to), and it
  carries the deployment's signature (anyone producing to the events topic can publish one,
  which the sink then stores and signs). Before, any such row counted, also one no checkpoint
  covered (reported `pending`, not failing): deleting a chain's first rows and appending a
  forged claim for them verified valid ("expired by policy", exit 0).
* A forged chain (another tenant, same partition) has no checkpoint: its rows were `pending`
  forever whatever their `ingested_at`; now rows stored before the partition's newest sink
  checkpoint (the sink signs every chain of its partitions at each tick) are extra rows.

A small signed store written as the sink writes it (`built_store`: one chain, a checkpoint
every 10 rows), so each case takes a few seconds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from agentaudit.anchors import DirectoryAnchor
from agentaudit.keyring import KeyRing
from agentaudit.retention.evidence import sign_claim
from agentaudit.settings import Settings
from agentaudit.sink.signing import CHECKPOINT_COLUMNS, CHECKPOINT_TABLE, ChainSigner
from agentaudit.sink.trees import ChainTrees, rebuild
from agentaudit.store.protocol import Store
from agentaudit.system_events import system_event
from agentaudit.trail.checkpoint import note_size
from agentaudit.trail.verdicts import EXPIRED, EXTRA, MISSING, PENDING, summary
from agentaudit.verify.derived import DerivedCheck
from agentaudit.verify.run import public_keys, verify_store
from agentaudit.verify.store import Window
from tests.factories import event_dict, wire
from tests.integration.helpers_trail import built_store, stored_chain

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


def _claim(settings: Settings, at: datetime, *, signed: bool) -> bytes:
    """A `retention_applied` event for the chain's first HORIZON rows: as a sweep makes it
    (signed with the deployment's key), or as anyone producing to the events topic can."""
    payload: dict[str, object] = {
        "days": 1,
        "held_subjects": [],
        "partitions": [PART],
        "horizons": [HORIZON],
        "horizon_days": [1],
        "floors": [0],
    }
    if signed:
        signer = KeyRing.load(settings.key_dir).signer
        payload["signature"] = sign_claim(signer, settings.deployment, TENANT, at, payload)
    doc = system_event("retention_applied", TENANT, payload, user_id="retention", now=lambda: at)
    return orjson.dumps(doc)


def _sign_claim_chain(settings: Settings, store: Store, leaves: list[bytes]) -> None:
    """What the sink does next: a signed checkpoint of the claims' chain, covering its rows."""
    trees = ChainTrees()
    trees.extend([(TENANT, CLAIM_PART, leaf) for leaf in leaves])
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


def test_only_a_signed_claim_a_checkpoint_covers_excuses_deleted_rows(tmp_path: Path) -> None:
    with built_store(tmp_path, 30, 1, every=10) as (settings, store):
        signed_at = _first_checkpoint_time(settings)
        store.command(
            "ALTER TABLE agentaudit.events DELETE WHERE tenant_id = {t:String} AND "
            "kafka_partition = {p:UInt32} AND chain_seq <= {h:UInt64} SETTINGS mutations_sync = 2",
            {"t": TENANT, "p": PART, "h": HORIZON},
        )
        at = datetime.fromtimestamp(signed_at, UTC) + timedelta(days=2)

        def gone_rows_are(verdict: str, ok: bool) -> None:
            valid, lines = _verdicts(settings, store)
            assert valid is ok and (f"p{PART}", verdict) in lines, lines
            other = MISSING if verdict == EXPIRED else EXPIRED
            assert (f"p{PART}", other) not in lines, lines

        # Published by any producer and stored and signed by the sink: unsigned, no excuse.
        unsigned = stored_chain(
            settings, store, TENANT, CLAIM_PART, [_claim(settings, at, signed=False)]
        )
        _sign_claim_chain(settings, store, [unsigned[0][0]])
        gone_rows_are(MISSING, False)  # was: valid, the deleted rows "expired by policy"

        # The sweep's own claim, not yet covered by a checkpoint (or appended by a forger).
        body = _claim(settings, at, signed=True)
        claim = stored_chain(settings, store, TENANT, CLAIM_PART, [body], 2, unsigned[0][1])
        gone_rows_are(MISSING, False)  # was: valid, the deleted rows "expired by policy"
        assert (f"p{CLAIM_PART}", PENDING) in _verdicts(settings, store)[1]

        # Once a checkpoint of its chain covers it, it is the trail's own: it counts.
        _sign_claim_chain(settings, store, [unsigned[0][0], claim[0][0]])
        gone_rows_are(EXPIRED, True)


def test_a_forged_chain_stored_before_its_partitions_last_tick_is_extra(tmp_path: Path) -> None:
    with built_store(tmp_path, 30, 1, every=10) as (settings, store):
        forged = "forged"
        bodies = [wire(event_dict(tenant=forged, kind="tool_call")) for _ in range(3)]
        stored_chain(settings, store, forged, PART, bodies)
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

        # The owner gives the partition up cleanly (a second after its last tick); its own
        # trees hold no tail left unchecked (a rebuild holds the rows after the last tick).
        owned = rebuilt()
        owned.tails.clear()
        handoff = ChainSigner(ring.signer, settings.deployment).sign(
            owned, datetime.now(UTC) + timedelta(seconds=2), handoff=True
        )
        anchor.append((c.tenant_id, c.partition, c.note, c.signed_at) for c in handoff)
        stored_chain(settings, store, "forged", PART, [wire(event_dict(tenant="forged"))])

        trees = rebuilt()
        assert ("forged", PART) in trees.unsigned, trees.unsigned  # was: signed next tick
        assert "no sink wrote them" in trees.unsigned[("forged", PART)]
        assert (TENANT, PART) not in trees.unsigned and (TENANT, PART) in trees.trees


def test_a_view_rewritten_to_hide_an_edited_typed_column_does_not_hide_it(
    tmp_path: Path,
) -> None:
    """The derived-value check re-derived typed columns with the store's own view query, which
    whoever can run DDL can rewrite: here `agent_id` read back from a column added to the
    ingest table, i.e. over the stored rows the stored value itself."""
    with built_store(tmp_path, 30, 1, every=10) as (_, store):
        store.command(
            "ALTER TABLE agentaudit.events UPDATE agent_id = 'forged-agent' "
            "WHERE chain_seq = 5 SETTINGS mutations_sync = 2"
        )
        window = Window()
        assert DerivedCheck(store, "", window.start, window.end).of(TENANT, PART) == {5: "agent_id"}
        store.command(
            "ALTER TABLE agentaudit.events_ingest ADD COLUMN agent_id String "
            "DEFAULT JSONExtractString(payload, 'agent_id')"
        )
        view = store.query(
            "SELECT as_select FROM system.tables "
            "WHERE database = 'agentaudit' AND name = 'events_ingest_mv'"
        ).result_rows[0][0]
        hidden = view.replace("tupleElement(e, 'agent_id') AS agent_id", "agent_id AS agent_id")
        assert hidden != view
        store.command(f"ALTER TABLE agentaudit.events_ingest_mv MODIFY QUERY {hidden}")
        # Before: {} (the edited column compared with itself).
        assert DerivedCheck(store, "", window.start, window.end).of(TENANT, PART) == {5: "agent_id"}
