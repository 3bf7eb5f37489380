"""Each chain's Merkle tree as the sink extends it, and how it is rebuilt on assignment.

The sink is the one sequencer of the chains of the partitions it owns, so it is also the one
that knows exactly which rows are the trail: its trees grow only by the leaf hashes of rows
the store has acknowledged (`Batch.leaves`, after the insert), never by what the store
happens to hold later. A row someone appends to the store directly is therefore in no
signed checkpoint; the verifier reports it as an extra row once a later checkpoint was
signed without it.

On every assignment the trees of the assigned partitions are rebuilt from the store: the
newest checkpoint row's frontier (taken only if it reproduces that row's root), then the
leaf hashes stored after it. Before the sink signs anything more for a chain, what it rebuilt
is checked against the chain's newest checkpoint kept *outside* the store (the anchor): the
store must still hold at least that many rows and reproduce that root. A chain that fails is
never signed again by this sink (a log must not sign a checkpoint inconsistent with one it
signed before; C2SP tlog-checkpoint): it is logged as an error and counted, and the verifier
shows what is wrong with it. Events keep being stored either way.

Rows after a chain's newest anchored checkpoint when its previous owner did not hand it off
(it crashed) are no checkpoint's: anyone with write access to the store may have forged,
edited or deleted some of them before this sink took over. Such a chain's tail is held
(`ChainTrees.tails`): it is signed only once `agentaudit.sink.tailcheck` found every tail row
to be what the sink stores for its Kafka record.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from agentaudit.anchors import Anchor
from agentaudit.sink.chain import ChainKey
from agentaudit.store.protocol import Store
from agentaudit.store.protocol import column_text as _text
from agentaudit.trail.checkpoint import Checkpoint, CheckpointError, open_checkpoint, origin_for
from agentaudit.trail.leaf import encode_leaf
from agentaudit.trail.merkle import CompactTree, leaf_hash
from agentaudit.trail.note import NoteError, Verifier

log = logging.getLogger("agentaudit.sink")


@dataclass(frozen=True)
class Tail:
    """A chain's rows no anchored checkpoint covers, left by a sink that did not hand off."""

    signed: CompactTree
    """The chain's tree at its newest anchored checkpoint (empty: none)."""
    head: int
    """The chain's last `chain_seq` in the store when it was rebuilt."""
    root: bytes
    """The rebuilt tree's root at `head` (of the stored `leaf_hash`es)."""


@dataclass
class ChainTrees:
    """The compact Merkle tree of every chain this sink extends, and the chains it must not sign."""

    trees: dict[ChainKey, CompactTree] = field(default_factory=dict)
    unsigned: dict[ChainKey, str] = field(default_factory=dict)
    """Chains whose store disagrees with their anchored checkpoints → the reason."""
    ended: set[ChainKey] = field(default_factory=set)
    """Chains closed by an end checkpoint (tenant off-boarded): not signed again."""
    tails: dict[ChainKey, Tail] = field(default_factory=dict)
    """Chains whose rows after their newest anchored checkpoint were stored by a sink that did
    not hand them off: not signed until the tail is checked against Kafka."""

    anchored: dict[ChainKey, int] = field(default_factory=dict)
    """Each chain's newest anchored checkpoint's size (chains with one)."""
    unreadable: dict[ChainKey, Tail] = field(default_factory=dict)
    """Chains of `unsigned` whose tail Kafka could not confirm (`signed`: where the held rows
    start): an operator's acceptance makes them signable again (`agentaudit.sink.tail_accept`)."""
    accepted: dict[ChainKey, str] = field(default_factory=dict)
    """Chains accepted since the last checkpoint → the acceptance's event id (its next line)."""

    def load(self, other: ChainTrees) -> None:
        """Replace everything with what was rebuilt for a new assignment."""
        self.trees, self.unsigned, self.ended = other.trees, other.unsigned, other.ended
        self.tails, self.anchored = other.tails, other.anchored
        self.unreadable, self.accepted = other.unreadable, other.accepted

    def signable(self, key: ChainKey) -> bool:
        """Whether the sink may sign the chain now."""
        return key not in self.unsigned and key not in self.ended and key not in self.tails

    def extend(self, leaves: Iterable[tuple[str, int, bytes]]) -> None:
        """Append the leaf hashes of rows the store has taken, in chain order."""
        by_chain: dict[ChainKey, list[bytes]] = {}
        for tenant_id, partition, h in leaves:
            by_chain.setdefault((tenant_id, partition), []).append(h)
        trees = self.trees
        for key, hashes in by_chain.items():  # a block at a time: CompactTree.extend is faster
            tree = trees.get(key)
            if tree is None:
                tree = trees[key] = CompactTree()
            tree.extend(hashes)


def ended_chains(store: Store, trees: ChainTrees) -> set[ChainKey]:
    """The chains of `trees` that an end checkpoint closed (in the store's table)."""
    parts = sorted({p for _, p in trees.trees})
    if not parts:
        return set()
    rows = store.query(
        "SELECT DISTINCT tenant_id, kafka_partition FROM agentaudit.checkpoints "
        "WHERE is_end AND has({parts:Array(UInt32)}, kafka_partition)",
        {"parts": parts},
    ).result_rows
    return {(str(t), int(p)) for t, p in rows} & trees.trees.keys()


def row_leaf_hash(
    stored: str | bytes,
    tenant_id: str,
    partition: int,
    seq: int,
    payload: str | bytes,
    cost: Decimal,
    priced: bool,
    pricing_version: str,
) -> bytes:
    """A stored row's leaf hash: its `leaf_hash` column, or computed from the row when empty
    (rows stored before migration 0013 hold zero bytes there)."""
    text = _text(stored)
    if text.strip("\x00"):
        return bytes.fromhex(text)
    body = payload.encode() if isinstance(payload, str) else payload
    return leaf_hash(encode_leaf(tenant_id, partition, seq, cost, priced, pricing_version, body))


_LATEST_SQL = (
    "SELECT tenant_id, kafka_partition, argMax(tree_size, (tree_size, signed_at)), "
    "argMax(root_hash, (tree_size, signed_at)), argMax(frontier, (tree_size, signed_at)), "
    "max(is_end) "
    "FROM agentaudit.checkpoints WHERE has({parts:Array(UInt32)}, kafka_partition) "
    "GROUP BY tenant_id, kafka_partition"
)
# Leaves after each chain's resume point (`transform`: the chain's start size, 0 if unlisted).
_LEAVES_SQL = (
    "SELECT tenant_id, kafka_partition, chain_seq, leaf_hash, "
    "if(empty(leaf_hash), payload, ''), cost_usd, priced, pricing_version "
    "FROM agentaudit.events "
    "WHERE kafka_topic = {topic:String} AND has({parts:Array(UInt32)}, kafka_partition) "
    "AND chain_seq > transform(concat(tenant_id, '/', toString(kafka_partition)), "
    "{keys:Array(String)}, {sizes:Array(UInt64)}, toUInt64(0)) "
    "ORDER BY tenant_id, kafka_partition, chain_seq"
)


def _resume_point(size: int, root_hex: str, frontier: Sequence[str]) -> CompactTree | None:
    """The checkpoint row's tree state, if its frontier reproduces its root."""
    try:
        tree = CompactTree(size, [bytes.fromhex(_text(h)) for h in frontier])
    except ValueError:
        return None
    return tree if tree.root().hex() == _text(root_hex) else None


def anchored(
    anchor: Anchor, verifiers: Callable[[str], list[Verifier]], deployment: str, key: ChainKey
) -> Checkpoint | None:
    """The chain's newest checkpoint outside the store that one of our keys signed."""
    origin = origin_for(deployment, *key)

    def newest_first() -> Iterator[str]:
        newest = anchor.latest(*key)
        if newest is None:
            return
        yield newest
        # Older notes are read only when the newest does not verify (rare): one file read
        # per chain on every assignment otherwise.
        yield from reversed(anchor.notes(*key)[:-1])

    for note in newest_first():
        try:
            return open_checkpoint(note, verifiers(origin), origin)[0]
        except (NoteError, CheckpointError):
            log.error(
                "chain %s/p%s: a checkpoint note outside the store does not verify; "
                "skipped (agentaudit verify reports it)",
                *key,
            )
    return None


def _handed_off(checks: dict[ChainKey, Checkpoint]) -> set[int]:
    """Partitions whose newest anchored sink checkpoint (``end`` ones are no sink's tick) is a
    ``handoff``: their previous owner gave them up cleanly (a same-second tie: not)."""
    newest: dict[int, tuple[int, bool]] = {}
    for (_, p), cp in checks.items():
        times = [x[5:] for x in cp.extensions if x.startswith("time ")]
        if "end" in cp.extensions or len(times) != 1 or not times[0].isdigit():
            continue
        at = (int(times[0]), "handoff" not in cp.extensions)
        if p not in newest or at > newest[p]:
            newest[p] = at
    return {p for p, (_, not_handoff) in newest.items() if not not_handoff}


def rebuild(
    store: Store,
    topic: str,
    partitions: list[int],
    heads: dict[ChainKey, tuple[int, str]],
    anchor: Anchor,
    verifiers: Callable[[str], list[Verifier]],
    deployment: str,
) -> ChainTrees:
    """The trees of every chain of `partitions`, checked against their anchored checkpoints."""
    out = ChainTrees()
    if not partitions:
        return out
    latest = {
        (str(t), int(p)): (int(size), _text(root), list(frontier), bool(end))
        for t, p, size, root, frontier, end in store.query(
            _LATEST_SQL, {"parts": partitions}
        ).result_rows
    }
    starts: dict[ChainKey, CompactTree] = {}
    checks: dict[ChainKey, Checkpoint] = {}
    for key in heads:
        cp = anchored(anchor, verifiers, deployment, key)
        if cp is not None:
            checks[key] = cp
            if any(line == "end" for line in cp.extensions):
                out.ended.add(key)
        row = latest.get(key)
        tree = _resume_point(*row[:3]) if row else None
        if row and row[3]:
            out.ended.add(key)
        # Resume from the table's state only when the anchored root can still be checked from
        # it: the anchored checkpoint is that very state, or newer (its root is recomputed from
        # the leaves after). Otherwise the chain is rebuilt from its first leaf.
        if tree is None or tree.size > heads[key][0]:
            continue
        if (
            cp is None
            or cp.size > tree.size
            or (cp.size == tree.size and cp.root_hash == tree.root())
        ):
            starts[key] = tree
    keys = sorted(starts)
    params: dict[str, Any] = {
        "topic": topic,
        "parts": partitions,
        "keys": [f"{t}/{p}" for t, p in keys],
        "sizes": [starts[k].size for k in keys],
    }
    trees = {key: starts.get(key) or CompactTree() for key in heads}
    # Each chain's tree at its anchored checkpoint: where a held tail starts (`Tail.signed`).
    at_anchor = {
        key: CompactTree(*tree.state())
        for key, tree in trees.items()
        if tree.size == (checks[key].size if key in checks else 0)
    }
    for t, p, seq, stored, payload, cost, priced, version in store.query(
        _LEAVES_SQL, params
    ).result_rows:
        key = (str(t), int(p))
        tree = trees.get(key)
        if tree is None or key in out.unsigned:
            continue
        if int(seq) != tree.size + 1:
            out.unsigned[key] = (
                f"chain_seq {seq} follows {tree.size}: a gap or a duplicate in the store"
            )
            continue
        cp = checks.get(key)
        tree.append_hash(
            row_leaf_hash(stored, key[0], key[1], int(seq), payload, cost, priced, str(version))
        )
        if cp is not None and tree.size == cp.size:
            if tree.root() != cp.root_hash:
                out.unsigned[key] = (
                    f"the store's first {cp.size} rows do not reproduce the anchored root"
                )
            else:
                at_anchor[key] = CompactTree(*tree.state())
    handed_off = _handed_off(checks)
    out.anchored = {key: cp.size for key, cp in checks.items()}
    for key, tree in trees.items():
        cp = checks.get(key)
        if key in out.unsigned:
            pass
        elif cp is None and key[1] in handed_off:
            # A sink hands off every chain it stored, and the one taking over (this one)
            # has signed nothing yet: a chain with rows but no checkpoint was no sink's.
            out.unsigned[key] = (
                f"{tree.size} rows and no anchored checkpoint, though partition {key[1]} "
                "was handed off: no sink wrote them"
            )
        elif cp is not None and tree.size < cp.size:
            out.unsigned[key] = (
                f"the store holds {tree.size} rows, the anchored checkpoint "
                f"signed {cp.size}: rows lost or the store rolled back"
            )
        elif cp is not None and "handoff" in cp.extensions and tree.size > cp.size:
            out.unsigned[key] = (
                f"{tree.size - cp.size} rows follow the handoff checkpoint at "
                f"{cp.size}: no sink wrote them"
            )
        elif tree.size != heads[key][0]:
            out.unsigned[key] = f"rebuilt {tree.size} leaves, the chain's head is {heads[key][0]}"
        elif key not in out.ended and tree.size > (cp.size if cp is not None else 0):
            # Not handed off (that case is above): its last owner died with these rows
            # unsigned. Held until `agentaudit.sink.tailcheck` has checked them against Kafka.
            start = at_anchor.get(key)
            if start is None:  # resumed from a table checkpoint the anchor does not hold
                out.unsigned[key] = (
                    f"{tree.size} rows, resumed from a checkpoint row the anchor does not hold: "
                    "the rows after the anchored checkpoint cannot be checked"
                )
            else:
                out.tails[key] = Tail(start, tree.size, tree.root())
        elif (
            cp is not None
            and key not in out.ended
            and key[1] not in handed_off
            and "handoff" not in cp.extensions
            and key in at_anchor
        ):
            # No row after the checkpoint, and its last owner died: rows it stored after it
            # may have been deleted. Checked too (for events of the chain with no row).
            out.tails[key] = Tail(at_anchor[key], tree.size, tree.root())
    for key, why in out.unsigned.items():
        log.error(
            "chain %s/p%s will not be signed: %s. Run `agentaudit verify --tenant %s`; "
            "runbooks/TrailUnsigned.md",
            key[0],
            key[1],
            why,
            key[0],
        )
    out.trees = trees
    return out
