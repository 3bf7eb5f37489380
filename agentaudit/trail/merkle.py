"""RFC 6962 / RFC 9162 Merkle tree hashing, proofs and their verification.

Definitions follow RFC 9162 §2.1 exactly:

* leaf hash ``SHA-256(0x00 || leaf)``, node hash ``SHA-256(0x01 || left || right)``;
* ``MTH`` of an empty list is ``SHA-256()``; for ``n > 1`` the list is split at ``k``,
  the largest power of two smaller than ``n``;
* ``PATH(m, D[n])`` (inclusion proof, §2.1.3.1) and ``PROOF(m, D[n])`` (consistency proof,
  §2.1.4.1), verified by the algorithms of §2.1.3.2 and §2.1.4.2.

Everything here works on *leaf hashes* (32-byte digests), not on leaf bytes: a verifier
hashes each leaf once (:func:`leaf_hash`) and the tree code never sees the leaf again.

An RFC 6962 root does not commit to the tree size: a proof checked against a root must take
the size from the same signed checkpoint as the root, never from the prover.

Verification functions return ``None`` on success and raise :class:`ProofError` with a
reason otherwise, so a caller cannot mistake a failure for a falsy success.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

HASH_SIZE = 32
_sha256 = hashlib.sha256
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
#: MTH({}) — the root of the empty tree (RFC 9162 §2.1.1).
EMPTY_ROOT = _sha256(b"").digest()


class ProofError(ValueError):
    """A proof, size or root did not verify; the message says why."""


def leaf_hash(leaf: bytes) -> bytes:
    """``SHA-256(0x00 || leaf)``."""
    return _sha256(LEAF_PREFIX + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``."""
    return _sha256(NODE_PREFIX + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_from_leaf_hashes(hashes: Sequence[bytes]) -> bytes:
    """``MTH`` over already-hashed leaves, for any number of leaves.

    Hashes level by level, carrying an odd last node up unchanged: for RFC 6962 trees this
    equals the recursive split definition (the tree is left-packed, so the lone right node
    of a level is exactly the root of the ``D[k:n]`` remainder), and whole-level list
    comprehensions are about twice as fast in CPython as a stack of appends.
    """
    n = len(hashes)
    if n == 0:
        return EMPTY_ROOT
    level = list(hashes)
    h = _sha256
    p = NODE_PREFIX
    while len(level) > 1:
        odd = level[-1] if len(level) & 1 else None
        it = iter(level)
        # pairs; an odd last hash is left out here and carried up below
        level = [h(p + a + b).digest() for a, b in zip(it, it, strict=False)]
        if odd is not None:
            level.append(odd)
    return level[0]


def root(leaves: Iterable[bytes]) -> bytes:
    """``MTH`` over leaf bytes (each hashed with :func:`leaf_hash`)."""
    h = _sha256
    return root_from_leaf_hashes([h(LEAF_PREFIX + leaf).digest() for leaf in leaves])


def _subtree(hashes: Sequence[bytes], lo: int, hi: int) -> bytes:
    """``MTH(D[lo:hi])`` for ``lo < hi``."""
    return root_from_leaf_hashes(hashes[lo:hi])


class CompactTree:
    """An append-only tree that keeps only its O(log n) frontier (the "compact range").

    The state is the roots of the perfect subtrees that make up ``D[0:size]``, one per set
    bit of ``size``, largest (leftmost) first. Appending merges equal-sized subtrees like a
    binary counter, so each append costs one leaf hash plus amortised one node hash. This
    is what a sequencer keeps per chain: it gives the root at the current size without
    holding past leaves, and the state is small enough to persist with each checkpoint.
    """

    __slots__ = ("_frontier", "_size")

    def __init__(self, size: int = 0, frontier: Sequence[bytes] = ()) -> None:
        """Start empty, or resume from a persisted ``(size, frontier)`` (see :meth:`state`)."""
        if size < 0 or len(frontier) != size.bit_count():
            raise ValueError(f"a frontier for size {size} has {size.bit_count()} hashes")
        if any(len(x) != HASH_SIZE for x in frontier):
            raise ValueError("frontier hashes must be 32 bytes")
        self._size = size
        self._frontier = list(frontier)

    @property
    def size(self) -> int:
        """The number of leaves appended so far."""
        return self._size

    def state(self) -> tuple[int, tuple[bytes, ...]]:
        """``(size, frontier)``: enough to resume with ``CompactTree(*state)``."""
        return self._size, tuple(self._frontier)

    def append_leaf(self, leaf: bytes) -> None:
        """Append one leaf (raw bytes; hashed here)."""
        self.append_hash(_sha256(LEAF_PREFIX + leaf).digest())

    def append_hash(self, h: bytes) -> None:
        """Append one already-hashed leaf."""
        frontier = self._frontier
        size = self._size
        # Each trailing 1-bit of size is a perfect subtree of the same height as the
        # carry: merge them (left is the older subtree).
        while size & 1:
            h = _sha256(NODE_PREFIX + frontier.pop() + h).digest()
            size >>= 1
        frontier.append(h)
        self._size += 1

    def extend(self, hashes: Sequence[bytes]) -> None:
        """Append many already-hashed leaves; same result as :meth:`append_hash` on each,
        about twice as fast: aligned blocks are hashed level by level, then merged whole."""
        i, n = 0, len(hashes)
        while i < n:
            size = self._size
            # The largest block that keeps the tree's shape: aligned at `size`, within the rest.
            height = min((size & -size).bit_length() - 1 if size else 63, (n - i).bit_length() - 1)
            if height == 0:
                self.append_hash(hashes[i])
                i += 1
                continue
            level = list(hashes[i : i + (1 << height)])
            while len(level) > 1:
                level = [
                    _sha256(NODE_PREFIX + a + b).digest()
                    for a, b in zip(level[::2], level[1::2], strict=True)
                ]
            self._push(level[0], height)
            i += 1 << height

    def _push(self, h: bytes, height: int) -> None:
        """Add a perfect subtree of ``2**height`` leaves at a size it is aligned to."""
        frontier = self._frontier
        carry = self._size >> height
        while carry & 1:
            h = _sha256(NODE_PREFIX + frontier.pop() + h).digest()
            carry >>= 1
        frontier.append(h)
        self._size += 1 << height

    def root(self) -> bytes:
        """``MTH`` of all leaves appended so far."""
        if not self._frontier:
            return EMPTY_ROOT
        it = reversed(self._frontier)
        r = next(it)
        for left in it:
            r = _sha256(NODE_PREFIX + left + r).digest()
        return r


def inclusion_proof(index: int, hashes: Sequence[bytes]) -> list[bytes]:
    """``PATH(index, D[n])`` (RFC 9162 §2.1.3.1) over the leaf hashes ``D[n]``.

    Costs O(n) hashing (the sibling subtrees are recomputed); callers proving many leaves
    of one large tree should keep stored subtree hashes (tiles) instead.
    """
    n = len(hashes)
    if not 0 <= index < n:
        raise ValueError(f"index {index} outside a tree of size {n}")
    path: list[bytes] = []
    lo, hi, m = 0, n, index
    while hi - lo > 1:
        k = _split(hi - lo)
        if m < k:
            path.append(_subtree(hashes, lo + k, hi))
            hi = lo + k
        else:
            path.append(_subtree(hashes, lo, lo + k))
            lo, m = lo + k, m - k
    path.reverse()  # PATH lists the deepest sibling first
    return path


def consistency_proof(old_size: int, hashes: Sequence[bytes]) -> list[bytes]:
    """``PROOF(old_size, D[n])`` (RFC 9162 §2.1.4.1) over the leaf hashes ``D[n]``.

    Defined by the RFC for ``0 < old_size < n``; ``old_size == n`` and ``old_size == 0``
    give the empty proof (every tree extends the empty tree and itself).
    """
    n = len(hashes)
    if not 0 <= old_size <= n:
        raise ValueError(f"old size {old_size} outside 0..{n}")
    if old_size in (0, n):
        return []
    proof: list[bytes] = []
    lo, hi, m, whole = 0, n, old_size, True
    while True:
        if m == hi - lo:
            # SUBPROOF(m, D[m], b): {} if D[m] is the whole old tree, else MTH(D[m]).
            if not whole:
                proof.append(_subtree(hashes, lo, hi))
            break
        k = _split(hi - lo)
        if m <= k:
            proof.append(_subtree(hashes, lo + k, hi))
            hi = lo + k
        else:
            proof.append(_subtree(hashes, lo, lo + k))
            lo, m, whole = lo + k, m - k, False
    proof.reverse()
    return proof


def _check_hash(h: bytes, what: str) -> None:
    if len(h) != HASH_SIZE:
        raise ProofError(f"{what} is {len(h)} bytes, not {HASH_SIZE}")


def root_from_inclusion_proof(
    index: int, size: int, leaf_h: bytes, proof: Sequence[bytes]
) -> bytes:
    """The root implied by an inclusion proof (RFC 9162 §2.1.3.2 steps 1–4).

    Raises :class:`ProofError` if the proof's length does not fit ``index`` and ``size``.
    """
    if not 0 <= index < size:
        raise ProofError(f"index {index} outside a tree of size {size}")
    _check_hash(leaf_h, "leaf hash")
    fn, sn, r = index, size - 1, leaf_h
    for p in proof:
        _check_hash(p, "proof hash")
        if sn == 0:
            raise ProofError("inclusion proof too long")
        if fn & 1 or fn == sn:
            r = _sha256(NODE_PREFIX + p + r).digest()
            if not fn & 1:
                # fn is the last node of its level: it is carried up until it is a right
                # child again (or the root).
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = _sha256(NODE_PREFIX + r + p).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof too short")
    return r


def verify_inclusion(
    index: int, size: int, leaf_h: bytes, proof: Sequence[bytes], root_h: bytes
) -> None:
    """Check that leaf hash ``leaf_h`` is at ``index`` in the tree of ``size`` with root ``root_h``.

    RFC 9162 §2.1.3.2. Raises :class:`ProofError` on any mismatch.
    """
    _check_hash(root_h, "root")
    if root_from_inclusion_proof(index, size, leaf_h, proof) != root_h:
        raise ProofError("inclusion proof does not lead to the root")


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree ``(new_size, new_root)`` extends ``(old_size, old_root)``.

    RFC 9162 §2.1.4.2 for ``0 < old_size < new_size``. The RFC leaves the trivial cases to
    the implementation; here ``old_size == new_size`` needs an empty proof and equal roots,
    and ``old_size == 0`` needs an empty proof and ``old_root`` equal to the empty-tree root
    (a checkpoint of size 0 commits to ``SHA-256()``; anything else is not a tree head).
    Raises :class:`ProofError` on any mismatch.
    """
    _check_hash(old_root, "old root")
    _check_hash(new_root, "new root")
    if not 0 <= old_size <= new_size:
        raise ProofError(f"old size {old_size} not within 0..new size {new_size}")
    if old_size == 0 or old_size == new_size:
        if proof:
            raise ProofError("proof must be empty when old size is 0 or equals new size")
        if old_size == 0:
            if old_root != EMPTY_ROOT:
                raise ProofError("old root is not the empty-tree root")
        elif old_root != new_root:
            raise ProofError("same size, different roots")
        return
    if not proof:
        raise ProofError("empty consistency proof")
    for p in proof:
        _check_hash(p, "proof hash")
    path = list(proof)
    # A perfect old tree is a node of the new tree itself; the RFC prepends its root.
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof too long")
        if fn & 1 or fn == sn:
            fr = _sha256(NODE_PREFIX + c + fr).digest()
            sr = _sha256(NODE_PREFIX + c + sr).digest()
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = _sha256(NODE_PREFIX + sr + c).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof too short")
    if fr != old_root:
        raise ProofError("consistency proof does not lead to the old root")
    if sr != new_root:
        raise ProofError("consistency proof does not lead to the new root")
