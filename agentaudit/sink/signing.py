"""Signing every chain's checkpoint at a fixed interval, also when nothing changed.

Each tick signs, for every chain the sink owns, a C2SP tlog-checkpoint of its tree
(origin ``<deployment>/agentaudit/<tenant>/p<partition>``, size, root) with the extension
line ``time <unix seconds>``, as a C2SP signed note under the key name = origin. When the
sink gives its partitions up (revoke, stop) it signs once more, after its last insert, with
the line ``handoff``: every row it stored is in that checkpoint, so a row found after it in
the store that no later checkpoint covers was not written by a sink. ``end`` marks a chain's
deliberate last checkpoint (tenant off-boarded). Re-signing an
unchanged chain is what makes a deleted tail visible: a later checkpoint still states the
size. The notes go outside the store first (the anchor), then into `agentaudit.checkpoints`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agentaudit.anchors import Anchor, DirectoryAnchor
from agentaudit.errors import UserError
from agentaudit.keyring import PUBLIC_KEYS_FILE, KeyRing
from agentaudit.settings import Settings
from agentaudit.sink.trees import ChainKey, ChainTrees, rebuild
from agentaudit.store.protocol import Store
from agentaudit.store.protocol import column_text as _text
from agentaudit.trail.checkpoint import (
    Checkpoint,
    CheckpointError,
    open_checkpoint,
    origin_for,
    sign_checkpoint,
)
from agentaudit.trail.merkle import CompactTree
from agentaudit.trail.note import NoteError, Signer, Verifier
from agentaudit_sdk.clock import UtcNow, utc_now

log = logging.getLogger("agentaudit.sink")


def _stamp(key_dir: Path) -> tuple[int, int] | None:
    """(mtime, inode) of the public-key file: a rotation replaces it."""
    try:
        st = (key_dir / PUBLIC_KEYS_FILE).stat()
    except FileNotFoundError:
        return None
    return st.st_mtime_ns, st.st_ino


CHECKPOINT_TABLE = "agentaudit.checkpoints"
_TABLE_NOTES_SQL = (
    "SELECT note FROM agentaudit.checkpoints "
    "WHERE (tenant_id, kafka_partition, tree_size) IN {keys:Array(Tuple(String, UInt32, UInt64))}"
)
CHECKPOINT_COLUMNS: tuple[str, ...] = (
    "origin",
    "tenant_id",
    "kafka_partition",
    "tree_size",
    "root_hash",
    "signed_at",
    "key_id",
    "is_end",
    "note",
    "frontier",
)


@dataclass(frozen=True)
class Signed:
    """One signed checkpoint: its table row and the note for the anchor."""

    tenant_id: str
    partition: int
    note: str
    signed_at: datetime
    row: tuple[Any, ...]


class ChainSigner:
    """Signs checkpoints of chains with one key, renamed to each chain's origin."""

    def __init__(self, signer: Signer, deployment: str) -> None:
        self.signer = signer
        self.deployment = deployment
        self._named: dict[ChainKey, Signer] = {}

    def _for(self, key: ChainKey) -> tuple[str, Signer]:
        named = self._named.get(key)
        if named is None:
            named = self._named[key] = self.signer.renamed(origin_for(self.deployment, *key))
        return named.name, named

    def sign(
        self,
        trees: ChainTrees,
        at: datetime,
        *,
        handoff: bool = False,
        end: frozenset[ChainKey] = frozenset(),
    ) -> list[Signed]:
        """A checkpoint of every signable chain at `at`; `end` ones are final. `handoff` is not
        stated for a partition with a chain whose tail is still held (not checked yet): its next
        owner must check that tail too, and a chain it holds with no checkpoint at all would
        otherwise look forged to it (no sink's chain in a handed-off partition)."""
        plain = (f"time {int(at.timestamp())}",)
        held = {p for _, p in trees.tails}
        out: list[Signed] = []
        for key in sorted(trees.trees):
            if not trees.signable(key):
                continue
            stamp = (*plain, "handoff") if handoff and key[1] not in held else plain
            ext = (*stamp, "end") if key in end else stamp
            if key in trees.accepted:  # signed on an operator's acceptance: say which
                ext = (*ext, f"accepted {trees.accepted[key]}")
            out.append(self.sign_tree(key, trees.trees[key], at, ext))
        return out

    def sign_tree(
        self, key: ChainKey, tree: CompactTree, at: datetime, ext: tuple[str, ...]
    ) -> Signed:
        """One chain's checkpoint of `tree` with the extension lines `ext`."""
        origin, named = self._for(key)
        size, frontier = tree.state()
        root = tree.root()
        note = sign_checkpoint(Checkpoint(origin, size, root, ext), [named])
        row = (
            origin,
            key[0],
            key[1],
            size,
            root.hex(),
            at,
            f"{named.key_id:08x}",
            "end" in ext,
            note,
            [h.hex() for h in frontier],
        )
        return Signed(key[0], key[1], note, at, row)


class TrailSigning:
    """What a sink needs to sign its chains: the key, the anchor and the interval's clock."""

    def __init__(
        self,
        signer: Signer,
        verifiers: Callable[[str], list[Verifier]],
        deployment: str,
        anchor: Anchor,
        interval_s: float,
        clock: UtcNow = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
        key_dir: Path | None = None,
    ) -> None:
        """`key_dir`: where the key ring is re-read from after a rotation (None: keep `signer`)."""
        self.chains = ChainSigner(signer, deployment)
        self.verifiers = verifiers
        self.deployment = deployment
        self.anchor = anchor
        self.interval_s = interval_s
        self.clock = clock
        self.monotonic = monotonic
        self._last = monotonic()
        self.key_dir = key_dir
        self._key_stamp = None if key_dir is None else _stamp(key_dir)

    @classmethod
    def from_settings(cls, settings: Settings) -> TrailSigning | None:
        """None when signing is off (interval 0); :class:`KeyMissing` when there is no key."""
        if settings.checkpoint_interval_s <= 0:
            log.warning(
                "checkpoint signing is off (AGENTAUDIT_CHECKPOINT_INTERVAL_S=0): the "
                "trail is chained but not signed"
            )
            return None
        ring = KeyRing.load(settings.key_dir)
        return cls(
            ring.signer,
            ring.verifiers,
            settings.deployment,
            DirectoryAnchor(settings.checkpoints_dir),
            settings.checkpoint_interval_s,
            key_dir=settings.key_dir,
        )

    def _follow_rotation(self) -> None:
        """After `agentaudit keys rotate` a running sink signs with the new key from its next
        checkpoint on: the public-key file changed, the ring is read again."""
        if self.key_dir is None:
            return
        stamp = _stamp(self.key_dir)
        if stamp == self._key_stamp:
            return
        ring = KeyRing.load(self.key_dir)
        self.chains = ChainSigner(ring.signer, self.deployment)
        self.verifiers = ring.verifiers
        self._key_stamp = stamp
        log.info("signing key changed: now %s", ring.current.fingerprint)

    def due(self) -> bool:
        return self.monotonic() - self._last >= self.interval_s

    def rebuild(
        self,
        store: Store,
        topic: str,
        partitions: list[int],
        heads: dict[ChainKey, tuple[int, str]],
    ) -> ChainTrees:
        """The assigned chains' trees, checked against the checkpoints outside the store."""
        return rebuild(
            store, topic, partitions, heads, self.anchor, self.verifiers, self.deployment
        )

    def unstored(self, store: Store, trees: ChainTrees) -> list[Signed]:
        """Each chain's newest anchored note that the checkpoints table lacks, for the table.

        The sink anchors a checkpoint, then inserts it into the table: one that died in
        between (or right after a takeover, whose notes wait for the next poll) left a note in
        the anchor only, which `agentaudit verify` then reported `not found` on every run. On
        assignment such a note is stored (only one our keys signed; its frontier when the
        rebuilt tree is at its size, else none: a frontier is never trusted anyway)."""
        latest = {k: n for k in sorted(trees.trees) if (n := self.anchor.latest(*k)) is not None}
        opened: dict[ChainKey, tuple[str, Checkpoint, int]] = {}
        for key, note in latest.items():
            origin = origin_for(self.deployment, *key)
            try:
                cp, signed = open_checkpoint(note, self.verifiers(origin), origin)
            except (NoteError, CheckpointError):
                continue  # rebuild() has logged it; verify reports it
            opened[key] = (note, cp, signed.verified[0].key_id)
        if not opened:
            return []
        wanted = [(t, p, cp.size) for (t, p), (_, cp, _) in opened.items()]
        have = {_text(n) for (n,) in store.query(_TABLE_NOTES_SQL, {"keys": wanted}).result_rows}
        out = []
        for key, (note, cp, kid) in opened.items():
            times = [x[5:] for x in cp.extensions if x.startswith("time ")]
            if note in have or len(times) != 1 or not times[0].isdigit():
                continue
            at = datetime.fromtimestamp(int(times[0]), UTC)
            tree = trees.trees[key]
            same = tree.size == cp.size and tree.root() == cp.root_hash
            frontier = [h.hex() for h in tree.state()[1]] if same else []
            is_end = "end" in cp.extensions
            row = (cp.origin, *key, cp.size, cp.root_hash.hex(), at, f"{kid:08x}", is_end, note)
            out.append(Signed(key[0], key[1], note, at, (*row, frontier)))
        if out:
            log.warning("%d anchored checkpoints were not in the table; stored now", len(out))
        return out

    def sign_prefix(self, key: ChainKey, tree: CompactTree, extra: tuple[str, ...] = ()) -> Signed:
        """A checkpoint of a chain's rows up to the last one found good (`tree`), anchored
        first: the chain is not signed past it (`agentaudit.sink.tailcheck`), and verify then
        reports the rows after it stored before now as extra. `extra`: more extension lines
        (a tail held unreadable: `agentaudit.sink.tail_accept.held_line`)."""
        self._follow_rotation()
        at = self.clock()
        signed = self.chains.sign_tree(key, tree, at, (f"time {int(at.timestamp())}", *extra))
        self._anchor([signed])
        return signed

    def _anchor(self, signed: list[Signed]) -> None:
        try:
            self.anchor.append((c.tenant_id, c.partition, c.note, c.signed_at) for c in signed)
        except OSError as exc:
            raise UserError(
                f"cannot write checkpoints outside the store ({exc}); the sink stops rather "
                "than leave the trail unanchored: fix AGENTAUDIT_CHECKPOINT_DIR and restart "
                "(nothing unstored was committed)"
            ) from None

    def sign(self, trees: ChainTrees, *, handoff: bool = False) -> list[Signed]:
        """Sign every signable chain now: anchored outside the store first, then returned for
        the table. An anchor that cannot be written raises: an unanchored trail is not
        silently accepted. `handoff`: the sink is giving its chains up (revoke, stop) with
        everything stored, so no row may follow in the store until a sink signs again."""
        self._last = self.monotonic()
        self._follow_rotation()
        signed = self.chains.sign(trees, self.clock(), handoff=handoff)
        if signed:
            self._anchor(signed)
        trees.accepted.clear()  # stated once: the checkpoints after it are ordinary ticks'
        return signed
