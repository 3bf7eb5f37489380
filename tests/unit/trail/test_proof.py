"""Receipts: C2SP tlog proofs and consistency proofs, built and verified, then tampered.

Paths and roots are checked against ``pymerkle`` 7.0.0 (an implementation independent of
ours; its indices are 1-based and its inclusion path starts with the leaf hash itself).
"""

from __future__ import annotations

import base64
from decimal import Decimal

import pytest
from pymerkle import InmemoryTree

from agentaudit.trail import merkle as m
from agentaudit.trail.checkpoint import Checkpoint, origin_for, sign_checkpoint
from agentaudit.trail.leaf import encode_leaf
from agentaudit.trail.note import Signer
from agentaudit.trail.proof import (
    CONSISTENCY_HEADER,
    PROOF_HEADER,
    ConsistencyProof,
    ReceiptError,
    TlogProof,
    build_consistency,
    build_proof,
    verify_consistency_proof,
    verify_proof,
)

EM = "\u2014"
DEPLOYMENT = "audit.example.com"
ORIGIN = origin_for(DEPLOYMENT, "t1", 3)
KEY = Signer.generate("key")
PUB = [KEY.public_key]
# Edge sizes of the issue: 1, 2, 3, 2^k, 2^k+1.
SIZES = [1, 2, 3, 4, 5, 7, 8, 9, 16, 17]
N = max(SIZES)


def _leaf(seq: int, tenant: str = "t1", partition: int = 3) -> bytes:
    payload = b'{"event_id":"00000000-0000-4000-8000-%012d","n":%d}' % (seq, seq)
    return encode_leaf(tenant, partition, seq, Decimal("0.000120000"), True, "2025-01", payload)


LEAVES = [_leaf(i + 1) for i in range(N)]
HASHES = [m.leaf_hash(x) for x in LEAVES]


def _note(
    size: int, *, signer: Signer = KEY, origin: str = ORIGIN, ext: tuple[str, ...] = ()
) -> str:
    cp = Checkpoint(origin, size, m.root_from_leaf_hashes(HASHES[:size]), ("time 1700000000", *ext))
    return sign_checkpoint(cp, [signer.renamed(origin)])


@pytest.fixture(scope="module")
def oracle() -> InmemoryTree:
    tree = InmemoryTree(algorithm="sha256")
    for leaf in LEAVES:
        tree.append_entry(leaf)
    return tree


@pytest.mark.parametrize("n", SIZES)
def test_round_trip_at_edge_sizes_matches_oracle(n: int, oracle: InmemoryTree) -> None:
    note = _note(n)
    assert Checkpoint.parse(note.split("\n\n")[0] + "\n").root_hash == oracle.get_root(n)
    for i in range(n):
        proof = build_proof(LEAVES[i], i, HASHES[:n], note)
        assert list(proof.path) == oracle.prove_inclusion(i + 1, n).path[1:]  # 1-based
        text = proof.format()
        assert TlogProof.parse(text) == proof
        receipt = verify_proof(text, PUB, deployment=DEPLOYMENT)
        assert (receipt.index, receipt.leaf.chain_seq) == (i, i + 1)
        assert (receipt.head.tenant_id, receipt.head.partition) == ("t1", 3)
        assert receipt.head.key_ids == (KEY.renamed(ORIGIN).key_id,)
        assert receipt.head.signed_at == Decimal(1700000000) and not receipt.head.is_end
        assert receipt.event_id == f"00000000-0000-4000-8000-{i + 1:012d}"


def test_layout_follows_the_spec() -> None:
    proof = build_proof(LEAVES[4], 4, HASHES[:9], _note(9))
    lines = proof.format().split("\n")
    assert lines[0] == PROOF_HEADER
    assert lines[1] == "extra " + base64.b64encode(LEAVES[4]).decode()
    assert lines[2] == "index 4"
    assert [base64.b64decode(x) for x in lines[3:7]] == m.inclusion_proof(4, HASHES[:9])
    assert lines[7] == "" and "\n".join(lines[8:]) == _note(9)
    # Without extra, the line is omitted, and the leaf can come out of band.
    bare = TlogProof(proof.index, proof.path, proof.checkpoint)
    assert bare.format().split("\n")[1] == "index 4"
    assert verify_proof(bare.format(), PUB, leaf=LEAVES[4]).leaf.chain_seq == 5
    with pytest.raises(ReceiptError, match="no leaf"):
        verify_proof(bare, PUB)


def _proof_text(n: int = 9, i: int = 4) -> str:
    return build_proof(LEAVES[i], i, HASHES[:n], _note(n)).format()


def _flip_b64(line: str, prefix: str = "") -> str:
    raw = bytearray(base64.b64decode(line[len(prefix) :]))
    raw[len(raw) // 2] ^= 1
    return prefix + base64.b64encode(bytes(raw)).decode()


def _rejected(text: str, reason: str, **kw: object) -> None:
    with pytest.raises(ReceiptError) as e:
        verify_proof(text, PUB, **kw)  # type: ignore[arg-type]
    assert e.value.reason == reason, e.value


def test_tampered_index_is_rejected() -> None:
    text = _proof_text()
    _rejected(text.replace("index 4\n", "index 5\n"), "INVALID: index")
    _rejected(text.replace("index 4\n", "index 04\n"), "malformed")
    # An index that agrees with a forged leaf's chain_seq still fails the path.
    lines = text.split("\n")
    lines[1] = "extra " + base64.b64encode(LEAVES[5]).decode()
    lines[2] = "index 5"
    _rejected("\n".join(lines), "INVALID: inclusion proof")


@pytest.mark.parametrize("n", [1, 2, 3, 8, 9])
def test_tampered_path_hash_is_rejected(n: int) -> None:
    for i in range(n):
        lines = _proof_text(n, i).split("\n")
        path_at = next(j for j in range(3, len(lines)) if lines[j] == "")
        for j in range(3, path_at):
            bad = lines[:j] + [_flip_b64(lines[j])] + lines[j + 1 :]
            _rejected("\n".join(bad), "INVALID: inclusion proof")
        if path_at > 3:  # dropped or extra hash
            _rejected("\n".join(lines[:3] + lines[4:]), "INVALID: inclusion proof")
        extra_hash = base64.b64encode(HASHES[0]).decode()
        _rejected(
            "\n".join(lines[:path_at] + [extra_hash] + lines[path_at:]), "INVALID: inclusion proof"
        )


def test_tampered_leaf_extra_is_rejected() -> None:
    lines = _proof_text().split("\n")
    lines[1] = _flip_b64(lines[1], "extra ")
    _rejected("\n".join(lines), "INVALID: leaf")  # no longer a canonical v1 leaf
    # A well-formed leaf with another payload, cost, or chain: all rejected.
    forged = [
        encode_leaf("t1", 3, 5, Decimal("0.000120000"), True, "2025-01", b'{"n":99}'),
        encode_leaf("t1", 3, 5, Decimal(0), True, "2025-01", LEAVES[4][-60:]),
    ]
    for leaf in forged:
        lines[1] = "extra " + base64.b64encode(leaf).decode()
        _rejected("\n".join(lines), "INVALID: inclusion proof")
    lines[1] = "extra " + base64.b64encode(_leaf(5, tenant="t2")).decode()
    _rejected("\n".join(lines), "INVALID: leaf")
    with pytest.raises(ReceiptError, match="not the given leaf"):
        verify_proof(_proof_text(), PUB, leaf=LEAVES[3])


def test_tampered_checkpoint_is_rejected() -> None:
    text = _proof_text()
    head, _, note = text.partition("\n\n")
    body, _, sigs = note.partition("\n\n")
    origin, size, root, *ext = body.split("\n")
    for bad_body in (
        "\n".join([origin, "10", root, *ext]),  # another size
        "\n".join([origin, size, _flip_b64(root), *ext]),  # another root
        f"{origin}\n{size}\n{root}\ntime 1700000001",  # another time
        "\n".join([origin, size, root, *ext, "end"]),
    ):
        _rejected(f"{head}\n\n{bad_body}\n\n{sigs}", "INVALID: signature")
    # Another chain's origin: its key ID differs, so no known key signed it.
    other = origin_for(DEPLOYMENT, "t1", 4)
    _rejected(f"{head}\n\n{body.replace(origin, other)}\n\n{sigs}", "INVALID: signature")
    # A correctly signed checkpoint of the same tree under another chain: leaf disagrees.
    _rejected(f"{head}\n\n{_note(9, origin=other)}", "INVALID: leaf")
    # A checkpoint of another size, properly signed: the path no longer fits.
    _rejected(f"{head}\n\n{_note(10)}", "INVALID: inclusion proof")
    _rejected(text, "INVALID: origin", deployment="other.example")


def test_tampered_or_unknown_signature_is_rejected() -> None:
    text = _proof_text()
    head, _, note = text.partition("\n\n")
    body, _, sig = note.partition("\n\n")
    name, b64 = sig[len(EM) + 1 : -1].split(" ")
    _rejected(f"{head}\n\n{body}\n\n{EM} {name} {_flip_b64(b64)}\n", "INVALID: signature")
    with pytest.raises(ReceiptError) as e:
        verify_proof(text, [Signer.generate("x").public_key])
    assert e.value.reason == "INVALID: signature" and "no known key" in str(e.value)
    # A rotated key set still verifies old receipts while the old public key is kept.
    assert verify_proof(text, [Signer.generate("x").public_key, *PUB]).index == 4
    # Keys may also come from a function origin -> verifiers (e.g. a key ring).
    assert verify_proof(text, lambda o: [KEY.renamed(o).verifier()]).index == 4


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t.replace(PROOF_HEADER, "c2sp.org/tlog-proof@v2"),
        lambda t: t.replace("index 4\n", ""),
        lambda t: t.replace("index 4\n", "index  4\n"),
        lambda t: t.replace("index 4\n", "index 4\n\n"),  # empty line inside the path
        lambda t: t.replace("extra ", "extra  "),
        lambda t: t.replace("extra ", "Extra "),
        lambda t: t.split("\n", 1)[0] + "\nextra \n" + t.split("\n", 2)[2],  # empty extra
        lambda t: t.replace("\n\n", "\n", 1),  # no empty line
        lambda t: t + "trailing\n",
        lambda t: t + "\n",
        lambda t: t[:-1],
        lambda t: t.replace("=\n", "\n", 1),  # unpadded hash
    ],
)
def test_malformed_proof_files_are_rejected(mangle) -> None:  # type: ignore[no-untyped-def]
    text = _proof_text()
    bad = mangle(text)
    assert bad != text
    _rejected(bad, "malformed")


def test_builder_refuses_what_cannot_verify() -> None:
    note = _note(9)
    with pytest.raises(m.ProofError):
        build_proof(LEAVES[4], 4, HASHES[:8], note)  # wrong size
    with pytest.raises(m.ProofError):
        build_proof(LEAVES[3], 4, HASHES[:9], note)  # not the leaf at the index
    bad = list(HASHES[:9])
    bad[7] = m.leaf_hash(b"x")
    with pytest.raises(m.ProofError, match="reproduce"):
        build_proof(LEAVES[4], 4, bad, note)  # a store that does not match its checkpoint


@pytest.mark.parametrize("new", SIZES)
def test_consistency_round_trip_at_edge_sizes(new: int, oracle: InmemoryTree) -> None:
    for old in range(1, new + 1):  # includes old == new
        proof = build_consistency(_note(old), _note(new), HASHES[:new])
        text = proof.format()
        assert text.split("\n")[0] == CONSISTENCY_HEADER
        assert ConsistencyProof.parse(text) == proof
        a, b = verify_consistency_proof(text, PUB, deployment=DEPLOYMENT)
        assert (a.checkpoint.size, b.checkpoint.size) == (old, new)
        assert (a.checkpoint.root_hash, b.checkpoint.root_hash) == (
            oracle.get_root(old),
            oracle.get_root(new),
        )


def _consistency_rejected(text: str, reason: str) -> None:
    with pytest.raises(ReceiptError) as e:
        verify_consistency_proof(text, PUB)
    assert e.value.reason == reason, e.value


def test_tampered_consistency_is_rejected() -> None:
    proof = build_consistency(_note(5), _note(17), HASHES[:17])
    text = proof.format()
    lines = text.split("\n")
    for j in range(1, 1 + len(proof.path)):
        bad = lines[:j] + [_flip_b64(lines[j])] + lines[j + 1 :]
        _consistency_rejected("\n".join(bad), "INVALID: inconsistent with previous checkpoint")
    # A forked history: another old tree of size 5, properly signed.
    forked = Checkpoint(ORIGIN, 5, m.root([b"x"] * 5), ("time 1",))
    fork_note = sign_checkpoint(forked, [KEY.renamed(ORIGIN)])
    _consistency_rejected(
        ConsistencyProof(fork_note, proof.new, proof.path).format(),
        "INVALID: inconsistent with previous checkpoint",
    )
    # Swapped (shrinking) checkpoints, another chain, a bad signature, a chain past its end.
    _consistency_rejected(
        ConsistencyProof(proof.new, proof.old, proof.path).format(),
        "INVALID: inconsistent with previous checkpoint",
    )
    other = _note(17, origin=origin_for(DEPLOYMENT, "t2", 3))
    _consistency_rejected(
        ConsistencyProof(proof.old, other, proof.path).format(), "INVALID: origin"
    )
    _consistency_rejected(text.replace("\n17\n", "\n18\n"), "INVALID: signature")
    ended = ConsistencyProof(_note(5, ext=("end",)), proof.new, proof.path).format()
    _consistency_rejected(ended, "INVALID: inconsistent with previous checkpoint")
    # Malformed: a third note, a missing note, no empty line.
    for bad_text in (
        text + "\n" + proof.new,
        text.split("\n\n")[0] + "\n\n" + proof.old,
        text.replace("\n\n", "\n", 1),
    ):
        _consistency_rejected(bad_text, "malformed")
