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
from datetime import datetime
from pathlib import Path
from typing import Any

from agentaudit.anchors import Anchor, DirectoryAnchor
from agentaudit.errors import UserError
from agentaudit.keyring import PUBLIC_KEYS_FILE, KeyRing
from agentaudit.settings import Settings
from agentaudit.sink.trees import ChainKey, ChainTrees, rebuild
from agentaudit.store.protocol import Store
from agentaudit.trail.checkpoint import Checkpoint, origin_for, sign_checkpoint
from agentaudit.trail.note import Signer, Verifier
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
        """A checkpoint of every signable chain at `at`; `end` ones are final."""
        stamp = (
            (f"time {int(at.timestamp())}", "handoff")
            if handoff
            else (f"time {int(at.timestamp())}",)
        )
        out: list[Signed] = []
        for key in sorted(trees.trees):
            if key in trees.unsigned or key in trees.ended:
                continue
            tree = trees.trees[key]
            origin, named = self._for(key)
            size, frontier = tree.state()
            root = tree.root()
            is_end = key in end
            ext = (*stamp, "end") if is_end else stamp
            note = sign_checkpoint(Checkpoint(origin, size, root, ext), [named])
            row = (
                origin,
                key[0],
                key[1],
                size,
                root.hex(),
                at,
                f"{named.key_id:08x}",
                is_end,
                note,
                [h.hex() for h in frontier],
            )
            out.append(Signed(key[0], key[1], note, at, row))
        return out


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

    def sign(self, trees: ChainTrees, *, handoff: bool = False) -> list[Signed]:
        """Sign every signable chain now: anchored outside the store first, then returned for
        the table. An anchor that cannot be written raises: an unanchored trail is not
        silently accepted. `handoff`: the sink is giving its chains up (revoke, stop) with
        everything stored, so no row may follow in the store until a sink signs again."""
        self._last = self.monotonic()
        self._follow_rotation()
        signed = self.chains.sign(trees, self.clock(), handoff=handoff)
        if signed:
            try:
                self.anchor.append((c.tenant_id, c.partition, c.note, c.signed_at) for c in signed)
            except OSError as exc:
                raise UserError(
                    f"cannot write checkpoints outside the store ({exc}); the sink stops rather "
                    "than leave the trail unanchored: fix AGENTAUDIT_CHECKPOINT_DIR and restart "
                    "(nothing unstored was committed)"
                ) from None
        return signed
