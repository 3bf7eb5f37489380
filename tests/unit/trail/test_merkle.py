"""RFC 6962/9162 Merkle trees, checked against two oracles independent of our code.

* ``pymerkle`` 7.0.0 (security mode on = RFC 6962 0x00/0x01 prefixes, SHA-256): roots at
  every size and inclusion paths (its indices are 1-based and its path starts with the leaf
  hash itself). Its consistency proofs are NOT RFC 9162 ``PROOF`` (it lists more, and in
  another order), so for them it serves only as the source of the roots our proofs must
  connect, and
* a naive recursive ``MTH``/``PATH``/``PROOF`` transcribed here from the RFC 9162 text,
  sharing nothing with ``agentaudit.trail.merkle``: exact proof equality.
"""

from __future__ import annotations

import hashlib
import time

import pytest
from pymerkle import InmemoryTree

from agentaudit.trail import merkle as m

# Edge sizes from the issue: 1, 2, 3, 2^k, 2^k+1, plus every size up to 18 in between.
SIZES = sorted(set(range(1, 19)) | {31, 32, 33, 63, 64, 65})
N = max(SIZES)
LEAVES = [b"leaf-%d" % i for i in range(N)]


def _h(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


def rfc_mth(d: list[bytes]) -> bytes:
    """RFC 9162 §2.1.1, literally."""
    n = len(d)
    if n == 0:
        return _h(b"")
    if n == 1:
        return _h(b"\x00" + d[0])
    k = 1
    while k * 2 < n:
        k *= 2
    return _h(b"\x01" + rfc_mth(d[:k]) + rfc_mth(d[k:]))


def rfc_path(mi: int, d: list[bytes]) -> list[bytes]:
    """RFC 9162 §2.1.3.1, literally."""
    n = len(d)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if mi < k:
        return rfc_path(mi, d[:k]) + [rfc_mth(d[k:])]
    return rfc_path(mi - k, d[k:]) + [rfc_mth(d[:k])]


def rfc_subproof(mi: int, d: list[bytes], b: bool) -> list[bytes]:
    """RFC 9162 §2.1.4.1 SUBPROOF, literally."""
    n = len(d)
    if mi == n:
        return [] if b else [rfc_mth(d)]
    k = 1
    while k * 2 < n:
        k *= 2
    if mi <= k:
        return rfc_subproof(mi, d[:k], b) + [rfc_mth(d[k:])]
    return rfc_subproof(mi - k, d[k:], False) + [rfc_mth(d[:k])]


@pytest.fixture(scope="module")
def oracle() -> InmemoryTree:
    tree = InmemoryTree(algorithm="sha256")  # security mode on: RFC 6962 prefixes
    for leaf in LEAVES:
        tree.append_entry(leaf)
    return tree


@pytest.fixture(scope="module")
def hashes() -> list[bytes]:
    return [m.leaf_hash(leaf) for leaf in LEAVES]


def test_hash_primitives_are_rfc6962() -> None:
    assert m.EMPTY_ROOT == bytes.fromhex(
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    assert m.leaf_hash(b"") == _h(b"\x00")
    assert m.node_hash(b"a" * 32, b"b" * 32) == _h(b"\x01" + b"a" * 32 + b"b" * 32)
    assert m.root([]) == m.EMPTY_ROOT == m.CompactTree().root()


@pytest.mark.parametrize("n", SIZES)
def test_roots_match_both_oracles(n: int, oracle: InmemoryTree, hashes: list[bytes]) -> None:
    expected = rfc_mth(LEAVES[:n])
    assert oracle.get_root(n) == expected
    assert m.root(LEAVES[:n]) == expected
    assert m.root_from_leaf_hashes(hashes[:n]) == expected


def test_compact_tree_root_at_every_size_and_resume() -> None:
    tree = m.CompactTree()
    for i, leaf in enumerate(LEAVES):
        tree.append_leaf(leaf)
        assert tree.size == i + 1
        assert tree.root() == rfc_mth(LEAVES[: i + 1]), i + 1
        # The persisted state is O(log n): one hash per set bit of the size.
        size, frontier = tree.state()
        assert len(frontier) == size.bit_count()
    resumed = m.CompactTree(*m.CompactTree(*tree.state()).state())
    resumed.append_leaf(b"next")
    assert resumed.root() == rfc_mth(LEAVES + [b"next"])


def test_compact_tree_rejects_a_frontier_that_does_not_fit_its_size() -> None:
    with pytest.raises(ValueError):
        m.CompactTree(3, [b"\x00" * 32])
    with pytest.raises(ValueError):
        m.CompactTree(1, [b"\x00" * 31])


@pytest.mark.parametrize("n", SIZES)
def test_inclusion_proofs_match_oracles_and_verify(
    n: int, oracle: InmemoryTree, hashes: list[bytes]
) -> None:
    root = oracle.get_root(n)
    for i in range(n):
        proof = m.inclusion_proof(i, hashes[:n])
        assert proof == rfc_path(i, LEAVES[:n])
        pm = oracle.prove_inclusion(i + 1, n)  # pymerkle: 1-based index
        assert pm.path[0] == hashes[i] and pm.path[1:] == proof
        m.verify_inclusion(i, n, hashes[i], proof, root)


@pytest.mark.parametrize("n", SIZES)
def test_consistency_proofs_match_rfc_text_and_connect_oracle_roots(
    n: int, oracle: InmemoryTree, hashes: list[bytes]
) -> None:
    new_root = oracle.get_root(n)
    for old in range(1, n + 1):
        proof = m.consistency_proof(old, hashes[:n])
        assert proof == rfc_subproof(old, LEAVES[:n], True)
        m.verify_consistency(old, n, oracle.get_root(old), new_root, proof)


def test_consistency_trivial_cases() -> None:
    r = m.root(LEAVES[:5])
    assert m.consistency_proof(0, [m.leaf_hash(x) for x in LEAVES[:5]]) == []
    m.verify_consistency(0, 5, m.EMPTY_ROOT, r, [])
    m.verify_consistency(0, 0, m.EMPTY_ROOT, m.EMPTY_ROOT, [])
    m.verify_consistency(5, 5, r, r, [])
    with pytest.raises(m.ProofError, match="empty-tree"):
        m.verify_consistency(0, 5, r, r, [])
    with pytest.raises(m.ProofError, match="different roots"):
        m.verify_consistency(5, 5, r, m.root(LEAVES[:4]), [])
    with pytest.raises(m.ProofError, match="must be empty"):
        m.verify_consistency(5, 5, r, r, [r])
    with pytest.raises(m.ProofError, match="not within"):
        m.verify_consistency(6, 5, r, r, [r])
    with pytest.raises(m.ProofError, match="empty consistency proof"):
        m.verify_consistency(3, 5, m.root(LEAVES[:3]), r, [])


def _flips(proof: list[bytes]) -> list[list[bytes]]:
    """Every proof with one bit flipped (first and last bit of every hash)."""
    out = []
    for j, h in enumerate(proof):
        for bit in (0, 8 * len(h) - 1):
            b = bytearray(h)
            b[bit // 8] ^= 1 << (bit % 8)
            out.append(proof[:j] + [bytes(b)] + proof[j + 1 :])
    return out


@pytest.mark.parametrize("n", [1, 2, 3, 7, 8, 9, 33])
def test_tampered_inclusion_fails(n: int, hashes: list[bytes]) -> None:
    root = m.root_from_leaf_hashes(hashes[:n])
    for i in range(n):
        proof = m.inclusion_proof(i, hashes[:n])
        for bad in _flips(proof):
            with pytest.raises(m.ProofError):
                m.verify_inclusion(i, n, hashes[i], bad, root)
        # Another leaf, another index, another size, a truncated or extended proof.
        with pytest.raises(m.ProofError):
            m.verify_inclusion(i, n, m.leaf_hash(b"forged"), proof, root)
        for j in range(n + 2):
            if j != i:
                with pytest.raises(m.ProofError):
                    m.verify_inclusion(j, n, hashes[i], proof, root)
        # RFC 6962 roots do not commit to the size (the signed checkpoint does): a proof
        # may fit another size's *shape*, but never that size's root.
        for size in range(i + 1, n + 3):
            if size != n:
                other_root = m.root_from_leaf_hashes(hashes[:size])
                with pytest.raises(m.ProofError):
                    m.verify_inclusion(i, size, hashes[i], proof, other_root)
        if proof:
            with pytest.raises(m.ProofError):
                m.verify_inclusion(i, n, hashes[i], proof[:-1], root)
        with pytest.raises(m.ProofError):
            m.verify_inclusion(i, n, hashes[i], proof + [root], root)


@pytest.mark.parametrize("n", [2, 3, 4, 5, 8, 9, 17])
def test_tampered_consistency_fails(n: int, hashes: list[bytes]) -> None:
    new_root = m.root_from_leaf_hashes(hashes[:n])
    for old in range(1, n):
        old_root = m.root_from_leaf_hashes(hashes[:old])
        proof = m.consistency_proof(old, hashes[:n])
        for bad in _flips(proof):
            with pytest.raises(m.ProofError):
                m.verify_consistency(old, n, old_root, new_root, bad)
        for o2 in range(1, n):
            if o2 != old:
                with pytest.raises(m.ProofError):
                    m.verify_consistency(o2, n, old_root, new_root, proof)
        for n2 in range(old + 1, n + 3):
            if n2 != n:
                other_root = m.root_from_leaf_hashes(hashes[:n2])
                with pytest.raises(m.ProofError):
                    m.verify_consistency(old, n2, old_root, other_root, proof)
        # A forked history: the same old size with a different root.
        with pytest.raises(m.ProofError):
            m.verify_consistency(old, n, m.root([b"x"] * old), new_root, proof)
        with pytest.raises(m.ProofError):
            m.verify_consistency(old, n, old_root, new_root, proof[:-1])
        with pytest.raises(m.ProofError):
            m.verify_consistency(old, n, old_root, new_root, proof + [new_root])


def test_proof_generation_rejects_out_of_range(hashes: list[bytes]) -> None:
    with pytest.raises(ValueError):
        m.inclusion_proof(3, hashes[:3])
    with pytest.raises(ValueError):
        m.consistency_proof(4, hashes[:3])
    with pytest.raises(m.ProofError):
        m.verify_inclusion(0, 0, hashes[0], [], m.EMPTY_ROOT)


def test_root_of_many_leaves_is_fast_enough() -> None:
    """65,536 leaves (1/16 of the issue's 1M goal) hash well within budget.

    Measured in CPU time (not wall), so other work on the shared box does not matter; the
    bound is 20x the measured cost and only catches an accidental O(n log n) or worse.
    """
    leaves = [b"%08d" % i for i in range(1 << 16)]
    t0 = time.process_time()
    r = m.root(leaves)
    spent = time.process_time() - t0
    assert r == _recursive_root_iter(leaves)
    assert spent < 2.0, spent


def _recursive_root_iter(leaves: list[bytes]) -> bytes:
    tree = m.CompactTree()
    for leaf in leaves:
        tree.append_leaf(leaf)
    return tree.root()


@pytest.mark.parametrize("start", [0, 1, 2, 3, 5, 8, 13, 64, 100])
@pytest.mark.parametrize("batch", [0, 1, 2, 3, 7, 8, 9, 31, 64, 100, 257])
def test_extend_equals_appending_each_hash(start: int, batch: int) -> None:
    hashes = [hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(start + batch)]
    one, many = m.CompactTree(), m.CompactTree()
    for h in hashes:
        one.append_hash(h)
    many.extend(hashes[:start])
    many.extend(hashes[start:])
    assert many.state() == one.state() and many.root() == one.root()
    assert many.root() == m.root_from_leaf_hashes(hashes)
