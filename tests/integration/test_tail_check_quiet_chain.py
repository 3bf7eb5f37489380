"""A chain quiet for longer than Kafka keeps records must not make a crashed partition's
tails unreadable (`agentaudit.sink.tailcheck.PartitionCheck.low`). Real chDB, no broker.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agentaudit.sink.decode import decode
from agentaudit.sink.tailcheck import PartitionCheck, Record
from agentaudit.store import open_store
from agentaudit.store.migrations import migrate
from tests.factories import event_dict, wire
from tests.integration.test_trail_tail_check import _stored_chain, _tail_of

pytestmark = pytest.mark.integration

QUIET, BUSY = "tail-quiet", "tail-busy"


def test_a_quiet_chains_old_offset_is_not_where_the_read_starts(tmp_path: Path) -> None:
    from tests.conftest import isolated_settings

    settings = isolated_settings("127.0.0.1:9", tmp_path)
    with open_store(settings, own=True) as store:
        migrate(store)
        # QUIET: rows 1-2 at offsets 0-1, long ago, signed at 2, nothing since. BUSY: rows 1-2
        # at 2-3 signed at 2 (the crashed sink's last tick), rows 3-4 at 4-5 not signed.
        records, offset = [], 0
        for tenant, n in ((QUIET, 2), (BUSY, 4)):
            tail = []
            for _ in range(n):
                body = wire(event_dict(tenant=tenant))
                records.append(Record(offset, 0, body))
                tail.append((decode(body).canonical, offset))  # type: ignore[union-attr]
                offset += 1
            _stored_chain(settings, store, tenant, tail)
        check = PartitionCheck(
            store,
            settings.events_topic,
            0,
            0,
            {(t, 0): _tail_of(store, t, 2)[1] for t in (QUIET, BUSY)},
            {(QUIET, 0): 2, (BUSY, 0): 2},
            {QUIET, BUSY},
            max_skew_ms=900_000,
            keys=None,
        )
        # Retention deleted offsets 0-2 (QUIET's rows and BUSY's first): the tails need 3 on
        # (BUSY's signed 2nd row, whose offset is checked, and its rows after). Before, the
        # read started at QUIET's signed row (offset 1), which Kafka no longer holds: every
        # held chain of the partition was unreadable.
        assert check.low == 3
        check.feed(records[check.low :])
        out = {o.key[0]: (o.bad, o.tree.size, o.checked) for o in check.finish()}
        assert out == {QUIET: (None, 2, 0), BUSY: (None, 4, 2)}, out


def test_a_chain_held_unreadable_without_a_checkpoint_survives_a_handoff(
    tmp_path: Path,
) -> None:
    """A chain whose rows Kafka could not confirm and that no checkpoint ever covered (the
    sink that stored it died before its first tick) is held, not forged, after the sink
    holding it hands its partition off: its held line is a checkpoint (size 0) of its own.
    Without one, the next owner saw rows and no checkpoint in a handed-off partition and
    refused the genuine chain as no sink's."""
    import os
    from datetime import UTC, datetime

    from agentaudit.anchors import DirectoryAnchor
    from agentaudit.keyring import KeyRing
    from agentaudit.sink.signing import ChainSigner
    from agentaudit.sink.tail_accept import held_line
    from agentaudit.sink.trees import ChainTrees, Tail, rebuild
    from agentaudit.trail.merkle import CompactTree
    from tests.conftest import isolated_settings

    settings = isolated_settings("127.0.0.1:9", tmp_path)
    ring = KeyRing.load(Path(os.environ["AGENTAUDIT_KEY_DIR"]))
    anchor = DirectoryAnchor(settings.checkpoints_dir)
    signer = ChainSigner(ring.signer, settings.deployment)
    with open_store(settings, own=True) as store:
        migrate(store)
        for offset, tenant in enumerate((QUIET, BUSY)):
            body = decode(wire(event_dict(tenant=tenant))).canonical  # type: ignore[union-attr]
            _stored_chain(settings, store, tenant, [(body, offset)])
        heads = {(t, 0): (1, "") for t in (QUIET, BUSY)}
        trees = ChainTrees()
        trees.extend([(t, 0, _tail_of(store, t, 1)[1].root) for t in (QUIET, BUSY)])
        key = (BUSY, 0)
        trees.unsigned[key] = "row 1: Kafka holds partition 0 from offset 9 on"
        at = datetime.now(UTC)
        tail = Tail(CompactTree(), 1, trees.trees[key].root())
        line = held_line(tail, "Kafka holds partition 0 from offset 9 on")
        marker = signer.sign_tree(key, CompactTree(), at, (f"time {int(at.timestamp())}", line))
        signed = [marker, *signer.sign(trees, at, handoff=True)]  # QUIET: handoff
        anchor.append((c.tenant_id, c.partition, c.note, c.signed_at) for c in signed)
        again = rebuild(
            store, settings.events_topic, [0], heads, anchor, ring.verifiers, settings.deployment
        )
        assert key in again.tails and key not in again.unsigned, again.unsigned
