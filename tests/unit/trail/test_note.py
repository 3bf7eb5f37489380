"""C2SP signed notes: the spec's and Go's published examples, then tampering and malformations."""

from __future__ import annotations

import base64

import pytest

from agentaudit.trail import note as nt

EM = "\u2014"

# c2sp.org/signed-note, "Verifier keys / Example" (C2SP/C2SP signed-note.md).
SPEC_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
SPEC_NOTE = (
    "This is an example message.\n\n"
    f"{EM} example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3"
    "mFXmRKuwHjG1Yu72IneyaQM=\n"
)
# golang.org/x/mod/sumdb/note package documentation (the reference implementation).
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_SIG = (
    f"{EM} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdng"
    "otpRZb6KE6RyyBwJnAM=\n"
)
ENOCH_SIG = (
    f"{EM} EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWL"
    "ox33WWd1RvMc+QQ=\n"
)


def test_spec_example_verifies() -> None:
    v = nt.Verifier.parse(SPEC_VKEY)
    assert (v.name, v.key_id) == ("example.com/foo", 0x530D903A)
    assert v.vkey() == SPEC_VKEY
    n = nt.open_note(SPEC_NOTE, [v])
    assert n.text == "This is an example message.\n"
    assert [s.name for s in n.verified] == ["example.com/foo"] and n.unknown == ()


def test_go_reference_signature_is_reproduced_byte_for_byte() -> None:
    """Ed25519 is deterministic (RFC 8032): the exact published note must come out."""
    signer = nt.Signer.parse(GO_SKEY)
    assert signer.skey() == GO_SKEY
    assert signer.verifier().vkey() == GO_VKEY
    assert nt.sign(GO_TEXT, [signer]) == GO_TEXT + "\n" + GO_SIG


def test_doubly_signed_go_example_unknown_key_is_ignored_not_fatal() -> None:
    doubly = GO_TEXT + "\n" + GO_SIG + ENOCH_SIG
    n = nt.open_note(doubly, [nt.Verifier.parse(GO_VKEY)])
    assert [s.name for s in n.verified] == ["PeterNeumann"]
    assert [s.name for s in n.unknown] == ["EnochRoot"]
    # Only unknown keys: rejected.
    with pytest.raises(nt.UnverifiedNoteError):
        nt.open_note(doubly, [nt.Verifier.parse(SPEC_VKEY)])


def test_key_id_is_sha256_of_name_newline_type_key() -> None:
    v = nt.Verifier.parse(GO_VKEY)
    assert nt.key_id(v.name, 0x01, v.public_key) == 0xC74F20A3


def test_multiple_signers_and_adding_a_signature_later() -> None:
    a, b, c = (nt.Signer.generate(n) for n in ("log.example/a", "w1.example", "w2.example"))
    note = nt.sign("hello\n", [a])
    note = nt.sign("hello\n", [b, c], existing=nt.signature_block(note))
    opened = nt.open_note(note, [a.verifier(), b.verifier(), c.verifier()])
    assert [s.name for s in opened.verified] == ["log.example/a", "w1.example", "w2.example"]
    assert nt.open_note(note.encode(), [c.verifier()]).unknown[0].name == "log.example/a"


def test_at_least_16_signatures_are_accepted() -> None:
    signers = [nt.Signer.generate(f"w{i}.example") for i in range(16)]
    note = nt.sign("x\n", signers)
    assert len(nt.open_note(note, [signers[15].verifier()]).unknown) == 15


def test_too_many_signatures_are_refused() -> None:
    s = nt.Signer.generate("a.example")
    note = nt.sign("x\n", [s]) + "".join(
        nt.Signer.generate(f"w{i}").signature_line("x\n") for i in range(nt.MAX_SIGNATURES)
    )
    with pytest.raises(nt.MalformedNoteError):
        nt.open_note(note, [s.verifier()])


def test_tampered_text_fails_with_the_known_key() -> None:
    v = nt.Verifier.parse(SPEC_VKEY)
    with pytest.raises(nt.InvalidSignatureError):
        nt.open_note(SPEC_NOTE.replace("example message", "example messagE"), [v])


def test_flipped_signature_bit_fails() -> None:
    v = nt.Verifier.parse(GO_VKEY)
    b64 = GO_SIG.split()[-1]
    raw = bytearray(base64.b64decode(b64))
    raw[-1] ^= 0x01
    bad = GO_SIG.replace(b64, base64.b64encode(bytes(raw)).decode())
    with pytest.raises(nt.InvalidSignatureError):
        nt.open_note(GO_TEXT + "\n" + bad, [v])


def test_signature_swapped_between_keys_or_notes_fails() -> None:
    a, b = nt.Signer.generate("a.example"), nt.Signer.generate("b.example")
    # b's signature bytes presented under a's name and key ID.
    b_sig = b.signature_line("hi\n").split()[-1]
    forged_raw = a.key_id.to_bytes(4, "big") + base64.b64decode(b_sig)[4:]
    forged = f"hi\n\n{EM} a.example {base64.b64encode(forged_raw).decode()}\n"
    with pytest.raises(nt.InvalidSignatureError):
        nt.open_note(forged, [a.verifier()])
    # A valid signature of another text.
    moved = "bye\n\n" + a.signature_line("hi\n")
    with pytest.raises(nt.InvalidSignatureError):
        nt.open_note(moved, [a.verifier()])


def test_same_name_other_key_is_unknown_not_trusted() -> None:
    """Name matches but key ID differs (another key pair): ignored, so unverified."""
    real, impostor = nt.Signer.generate("log.example"), nt.Signer.generate("log.example")
    with pytest.raises(nt.UnverifiedNoteError):
        nt.open_note(nt.sign("x\n", [impostor]), [real.verifier()])


def test_renamed_key_has_another_key_id() -> None:
    s = nt.Signer.generate("a.example/t1")
    r = s.renamed("a.example/t2")
    assert r.public_key == s.public_key and r.key_id != s.key_id
    with pytest.raises(nt.UnverifiedNoteError):
        nt.open_note(nt.sign("x\n", [r]), [s.verifier()])


GOOD = GO_TEXT + "\n" + GO_SIG


@pytest.mark.parametrize(
    "bad",
    [
        GO_TEXT + GO_SIG,  # no blank line
        GOOD[:-1],  # last signature line without newline
        GO_TEXT + "\n",  # no signatures
        GO_TEXT + "\n\n",
        GOOD.replace(EM, "-"),  # ASCII dash
        GOOD.replace(f"{EM} ", EM),  # no space after the dash
        GOOD.replace("PeterNeumann ", "Peter+Neumann "),  # '+' in a name
        GOOD.replace("PeterNeumann ", "PeterNeumann  "),  # empty field
        GOOD.replace("JnAM=", "JnAN="),  # non-canonical base64 trailing bits
        GOOD.replace("JnAM=", "JnAM"),  # missing padding
        GOOD.replace("x08go", "x08g\u00e9"),  # not base64
        GOOD.replace("If you", "If\tyou"),  # control character
        GOOD.replace("If you", "If\ryou"),
        GOOD + "trailing\n",  # a non-signature line after the signatures
        f"x\n\n{EM} PeterNeumann AAAAAA==\n",  # signature shorter than 5 bytes
    ],
)
def test_malformed_notes_are_rejected(bad: str) -> None:
    with pytest.raises(nt.MalformedNoteError):
        nt.open_note(bad, [nt.Verifier.parse(GO_VKEY)])


def test_invalid_utf8_is_rejected() -> None:
    with pytest.raises(nt.MalformedNoteError):
        nt.open_note(b"\xff\xfe\n\n" + GO_SIG.encode(), [nt.Verifier.parse(GO_VKEY)])


@pytest.mark.parametrize(
    "vkey",
    [
        GO_VKEY.replace("c74f20a3", "c74f20a4"),  # wrong key ID
        GO_VKEY.replace("c74f20a3", "C74F20A3"),  # hex must be lowercase
        GO_VKEY.replace("+ARpc", "+AhpC"),  # another algorithm byte
        GO_VKEY + "AA==",  # wrong key length
        "PeterNeumann+c74f20a3",
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ],
)
def test_malformed_vkeys_are_rejected(vkey: str) -> None:
    with pytest.raises(nt.NoteError):
        nt.Verifier.parse(vkey)


@pytest.mark.parametrize(
    "skey",
    [
        GO_SKEY.replace("c74f20a3", "c74f20a4"),
        GO_SKEY.replace("PRIVATE+KEY", "PRIVATE+KEYS"),
        GO_SKEY[:-4],
        GO_SKEY.replace("AYEK", "AhEK"),
    ],
)
def test_malformed_skeys_are_rejected(skey: str) -> None:
    with pytest.raises(nt.NoteError):
        nt.Signer.parse(skey)


def test_seed_is_not_in_repr() -> None:
    s = nt.Signer.parse(GO_SKEY)
    assert "AYEK" not in repr(s) and repr(s.seed) not in repr(s)


def test_sign_refuses_bad_text_and_no_signers() -> None:
    s = nt.Signer.generate("a.example")
    with pytest.raises(nt.MalformedNoteError):
        nt.sign("no newline", [s])
    with pytest.raises(nt.MalformedNoteError):
        nt.sign("bell\x07\n", [s])
    with pytest.raises(nt.NoteError):
        nt.sign("x\n", [])


def test_the_same_verifier_twice_is_fine() -> None:
    v = nt.Verifier.parse(GO_VKEY)
    assert len(nt.open_note(GOOD, [v, nt.Verifier.parse(GO_VKEY)]).verified) == 1
