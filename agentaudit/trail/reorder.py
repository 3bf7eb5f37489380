"""Judging a chain's disturbed rows: moved (``reordered``), altered (``row hash``) or innocent.

A row is disturbed when one of its checks failed or the link to the previous row broke.
Pure and shippable like the rest of the trail package: :class:`~.audit.ChainAudit` collects
the disturbed rows while it walks the chain and asks :func:`reordered_verdicts` at the end.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Container, Iterable, Mapping

from .leaf import LeafError, encode_leaf
from .verdicts import GENESIS, REORDERED, ROW_HASH, Row

REORDER_NEAR = 4  # positions either side of a disturbance tried for a moved row
_sha256 = hashlib.sha256


def row_hash_ok(r: Row) -> bool:
    """The row's row_hash is SHA-256(prev_hash ‖ payload); a row the store's engine
    checked (payload None) passed exactly that check there."""
    return r[1] is None or _sha256(r[5].encode("ascii") + r[1]).hexdigest() == r[6]


def leaf_hex(tenant: str, partition: int, r: Row, seq: int) -> str:
    """The hex leaf hash row `r` would have at position `seq` ("" when it cannot have one)."""
    if r[1] is None or r[2] is None:  # the engine checked it at its own place only
        return r[7] if seq == r[0] else ""
    try:
        leaf = encode_leaf(tenant, partition, seq, r[2], r[3], r[4], r[1])
    except LeafError:
        return ""
    return _sha256(b"\x00" + leaf).hexdigest()


def reordered_verdicts(
    disturbed: Mapping[int, Row],
    anomalies: Iterable[int],
    breaks: Mapping[int, str],
    link_only: Container[int],
    leaf_at: Callable[[Row, int], str],
) -> list[tuple[int, str]]:
    """(seq, verdict) for each disturbed row that is at fault, in seq order.

    ``anomalies``: seqs whose own checks failed; ``breaks``: seq -> the row_hash its link
    expected of seq - 1; ``link_only``: seqs whose only fault is a broken link;
    ``leaf_at(row, seq)``: the row's leaf hash at another place (:func:`leaf_hex`).

    Each row's place in *link order* is found by following ``prev_hash`` back to a row that
    sits where it should (or genesis); a row whose link-order place differs from its
    ``chain_seq`` (and whose stored leaf, if any, is its leaf at that place) is
    ``reordered``; a row whose leaf fits another place near a disturbance is too. A row
    whose only fault is a broken link to a moved predecessor is innocent; other faults are
    ``row hash``.
    """
    by_hash = {r[6]: (s, r[5]) for s, r in disturbed.items()}
    # row_hash -> place in link order; a link break names its predecessor's hash, whose
    # place is its seq unless that row is disturbed itself (then its links decide).
    placed = {h: s - 1 for s, h in breaks.items() if h not in by_hash}
    placed[GENESIS] = 0

    def link_place(h: str) -> int | None:
        path: list[str] = []
        while h not in placed and h in by_hash and len(path) <= len(by_hash):
            path.append(h)
            h = by_hash[h][1]
        base = placed.get(h)
        for x in reversed(path):
            base = None if base is None else base + 1
            placed[x] = base  # type: ignore[assignment]
        return base

    near: set[int] = set()
    for s in (*anomalies, *breaks):
        near.update(range(max(s - REORDER_NEAR, 1), s + REORDER_NEAR + 1))
    near.update(disturbed)
    out: list[tuple[int, str]] = []
    for seq, r in sorted(disturbed.items()):
        verdict: str | None = ROW_HASH
        if row_hash_ok(r):
            lp = link_place(r[5])
            place = None if lp is None else lp + 1
            if place is not None and place != seq:
                if not r[7] or leaf_at(r, place) == r[7]:
                    verdict = REORDERED
            elif r[7] and any(t != seq and leaf_at(r, t) == r[7] for t in sorted(near)):
                verdict = REORDERED
            elif place == seq and seq in link_only:
                verdict = None  # its predecessor moved, not this row
        if verdict is not None:
            out.append((seq, verdict))
    return out
