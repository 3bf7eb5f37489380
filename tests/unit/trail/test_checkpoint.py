"""C2SP tlog checkpoints: the spec's example, strict parsing, origins, signed tree heads."""

from __future__ import annotations

import base64

import pytest

from agentaudit.trail import merkle as m
from agentaudit.trail import note as nt
from agentaudit.trail.checkpoint import (
    Checkpoint,
    CheckpointError,
    open_checkpoint,
    origin_for,
    parse_origin,
    sign_checkpoint,
)

# c2sp.org/tlog-checkpoint, the example at the top of the spec (its body).
SPEC_BODY = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
ROOT = base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=")


def test_spec_example_body_parses_and_round_trips() -> None:
    cp = Checkpoint.parse(SPEC_BODY)
    assert cp == Checkpoint("example.com/behind-the-sofa", 20852163, ROOT)
    assert cp.body() == SPEC_BODY


def test_extension_lines_round_trip() -> None:
    text = SPEC_BODY + "ext one\nanother\n"
    cp = Checkpoint.parse(text)
    assert cp.extensions == ("ext one", "another") and cp.body() == text


def test_empty_tree() -> None:
    cp = Checkpoint("o.example/x", 0, m.EMPTY_ROOT)
    assert Checkpoint.parse(cp.body()) == cp
    assert cp.body().split("\n")[1] == "0"


R = "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I="


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "o\n1\n",  # root missing
        f"o\n1\n{R}",  # no final newline
        f"\n1\n{R}\n",  # empty origin
        f"o\n01\n{R}\n",  # leading zero
        f"o\n+1\n{R}\n",
        f"o\n-1\n{R}\n",
        f"o\n 1\n{R}\n",
        f"o\n1.0\n{R}\n",
        f"o\n18446744073709551616\n{R}\n",  # 2^64
        f"o\n\u0661\n{R}\n",  # a non-ASCII digit
        "o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I\n",  # unpadded
        "o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2J=\n",  # non-canonical bits
        "o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxqw==\n",  # 31 bytes
        f"o\n1\n{R}\n\next\n",  # empty extension line
        f"o\n1\n{R}\n\n",
    ],
)
def test_malformed_bodies_are_rejected(bad: str) -> None:
    with pytest.raises(CheckpointError):
        Checkpoint.parse(bad)


def test_largest_size_is_accepted() -> None:
    assert Checkpoint.parse(f"o\n18446744073709551615\n{R}\n").size == (1 << 64) - 1


def test_origin_names_chains_and_parses_back() -> None:
    o = origin_for("audit.acme.example", "t-1", 3)
    assert o == "audit.acme.example/agentaudit/t-1/p3"
    assert parse_origin(o) == ("audit.acme.example", "t-1", 3)
    assert parse_origin(origin_for("acme.example/eu/prod", "t", 0)) == (
        "acme.example/eu/prod",
        "t",
        0,
    )
    assert nt.valid_key_name(o)


@pytest.mark.parametrize(
    "deployment,tenant,partition",
    [
        ("", "t", 0),
        ("a b", "t", 0),
        ("a+b", "t", 0),
        ("acme.example/", "t", 0),
        ("acme.example", "T", 0),
        ("acme.example", "-t", 0),
        ("acme.example", "a/b", 0),
        ("acme.example", "t", -1),
    ],
)
def test_bad_origin_parts_are_refused(deployment: str, tenant: str, partition: int) -> None:
    with pytest.raises(CheckpointError):
        origin_for(deployment, tenant, partition)


@pytest.mark.parametrize(
    "origin", ["acme/agentaudit/t/p01", "acme/agentaudit/t/3", "acme/t/p3", "/agentaudit/t/p3"]
)
def test_parse_origin_is_strict(origin: str) -> None:
    with pytest.raises(CheckpointError):
        parse_origin(origin)


@pytest.fixture
def log() -> tuple[nt.Signer, list[bytes]]:
    origin = origin_for("audit.acme.example", "t1", 0)
    return nt.Signer.generate(origin), [m.leaf_hash(b"row %d" % i) for i in range(21)]


def _cp(signer: nt.Signer, hashes: list[bytes], n: int) -> str:
    return sign_checkpoint(
        Checkpoint(signer.name, n, m.root_from_leaf_hashes(hashes[:n])), [signer]
    )


def test_signed_checkpoints_verify_and_prove_append_only(
    log: tuple[nt.Signer, list[bytes]],
) -> None:
    signer, hashes = log
    (a, _), (b, _) = (
        open_checkpoint(_cp(signer, hashes, n), [signer.verifier()], origin=signer.name)
        for n in (13, 21)
    )
    m.verify_consistency(a.size, b.size, a.root_hash, b.root_hash, m.consistency_proof(13, hashes))
    proof = m.inclusion_proof(12, hashes[:13])
    m.verify_inclusion(12, a.size, hashes[12], proof, a.root_hash)


def test_checkpoint_of_another_chain_is_refused(log: tuple[nt.Signer, list[bytes]]) -> None:
    signer, hashes = log
    with pytest.raises(CheckpointError):
        open_checkpoint(
            _cp(signer, hashes, 5),
            [signer.verifier()],
            origin=origin_for("audit.acme.example", "t2", 0),
        )


def test_edited_size_or_root_breaks_the_signature(log: tuple[nt.Signer, list[bytes]]) -> None:
    signer, hashes = log
    note = _cp(signer, hashes, 21)
    truncated = note.replace("\n21\n", "\n16\n", 1)
    with pytest.raises(nt.InvalidSignatureError):
        open_checkpoint(truncated, [signer.verifier()])
    root16 = base64.b64encode(m.root_from_leaf_hashes(hashes[:16])).decode()
    root21 = base64.b64encode(m.root_from_leaf_hashes(hashes[:21])).decode()
    with pytest.raises(nt.InvalidSignatureError):
        open_checkpoint(truncated.replace(root21, root16), [signer.verifier()])


def test_signature_swapped_from_another_checkpoint_fails(
    log: tuple[nt.Signer, list[bytes]],
) -> None:
    signer, hashes = log
    old, new = _cp(signer, hashes, 20), _cp(signer, hashes, 21)
    swapped = new.split("\n\n")[0] + "\n\n" + nt.signature_block(old)
    with pytest.raises(nt.InvalidSignatureError):
        open_checkpoint(swapped, [signer.verifier()])


def test_a_forked_checkpoint_is_caught_by_consistency(
    log: tuple[nt.Signer, list[bytes]],
) -> None:
    """A validly signed head whose history differs (the key holder rewrote rows)."""
    signer, hashes = log
    forked = hashes[:5] + [m.leaf_hash(b"rewritten")] + hashes[6:]
    a, _ = open_checkpoint(_cp(signer, hashes, 13), [signer.verifier()])
    b, _ = open_checkpoint(_cp(signer, forked, 21), [signer.verifier()])
    with pytest.raises(m.ProofError):
        m.verify_consistency(13, 21, a.root_hash, b.root_hash, m.consistency_proof(13, forked))


def test_body_is_not_interpreted_before_the_signature_verifies() -> None:
    stranger = nt.Signer.generate("x.example")
    with pytest.raises(nt.UnverifiedNoteError):
        open_checkpoint("garbage\n\n" + stranger.signature_line("garbage\n"), [])
