"""Receipts: C2SP tlog proofs (https://c2sp.org/tlog-proof) and consistency proofs.

**Inclusion** (one event is in its chain's log) uses the C2SP format exactly::

    c2sp.org/tlog-proof@v1
    extra <base64 of the leaf v1 bytes>
    index <0-based leaf index, ASCII decimal, no leading zeros>
    <base64 of one inclusion-path hash per line: the leaf's sibling first, up to the
     root's child; RFC 6962 PATH>
    <empty line>
    <the signed checkpoint note, verbatim>

The optional ``extra`` line is what the spec allows it for ("additional data necessary to
reconstruct the record hash"): agentaudit puts the row's leaf v1 bytes there
(:mod:`.leaf`: tenant, partition, chain_seq, cost, priced, pricing version, canonical
payload). The verifier does not trust it: it hashes those bytes itself (step 1 of the
spec's verification), and the inclusion path must lead from that hash to the signed root.
So a receipt shows *what* was proven, and changing one byte of it breaks the proof.

**Consistency** (a later checkpoint extends an earlier one, RFC 9162 §2.1.4) has no C2SP
proof-file format; agentaudit's own, built the same way (extension ``.tlog-consistency``)::

    agentaudit.consistency.v1
    <base64 of one RFC 9162 PROOF hash per line, as in tlog-witness's add-checkpoint>
    <empty line>
    <the OLD signed checkpoint note, verbatim>
    <empty line>
    <the NEW signed checkpoint note, verbatim>

Every line of a checkpoint body and of a signature block is non-empty, so a signed note
holds exactly one empty line; the file therefore splits unambiguously at its empty lines.

Verification needs the log's keys: an agentaudit chain is signed under key name = origin
(:mod:`.checkpoint`), so a verifier takes the published raw Ed25519 public keys and derives
each chain's verifier keys from the origin (:func:`verifiers_for`). The origin line is read
before the signature is checked only to pick those keys: the key ID binds the name, so a
note whose origin was changed no longer verifies under any key.

Pure: the standard library, ``cryptography`` (via :mod:`.note`) and relative imports only,
so this module ships in the export bundle.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from .checkpoint import Checkpoint, CheckpointError, open_checkpoint, parse_origin
from .leaf import Leaf, LeafError, decode_leaf
from .merkle import (
    HASH_SIZE,
    ProofError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root_from_inclusion_proof,
    verify_consistency,
)
from .note import MalformedNoteError, NoteError, Verifier, b64, strict_b64decode

PROOF_HEADER = "c2sp.org/tlog-proof@v1"
CONSISTENCY_HEADER = "agentaudit.consistency.v1"
PROOF_SUFFIX = ".tlog-proof"
CONSISTENCY_SUFFIX = ".tlog-consistency"
#: A tree of at most 2^64 leaves has proofs of at most 64 hashes (the witness spec's 63
#: counts consistency proofs, which never include the old root).
MAX_PATH = 64
_DECIMAL = re.compile(r"0|[1-9][0-9]*")
_TIME = re.compile(r"time (0|[1-9][0-9]*)(\.[0-9]+)?")
_MAX_U64 = (1 << 64) - 1

#: Where verifier keys come from: raw 32-byte Ed25519 public keys (named by the origin
#: here), or a function origin -> verifiers (e.g. ``KeyRing.verifiers``).
Keys = Iterable[bytes] | Callable[[str], Iterable[Verifier]]


class ReceiptError(ValueError):
    """A proof file is malformed or does not verify; ``reason`` is the short verdict."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def _unb64(s: str, what: str) -> bytes:
    try:
        return strict_b64decode(s)
    except ValueError as e:
        raise ReceiptError("malformed", f"{what}: {e}") from None


def _hash_lines(lines: Sequence[str]) -> tuple[bytes, ...]:
    if len(lines) > MAX_PATH:
        raise ReceiptError("malformed", f"more than {MAX_PATH} proof hashes")
    out = []
    for i, line in enumerate(lines):
        h = _unb64(line, f"proof line {i + 1}")
        if len(h) != HASH_SIZE:
            raise ReceiptError("malformed", f"proof line {i + 1} is not a SHA-256 hash")
        out.append(h)
    return tuple(out)


def _split_note(rest: str, what: str) -> tuple[str, str]:
    """The first signed note of ``rest`` (body, blank line, signatures) and what follows."""
    body, sep, tail = rest.partition("\n\n")
    if not sep:
        raise ReceiptError("malformed", f"{what}: no signatures")
    sigs, sep, after = tail.partition("\n\n")
    return f"{body}\n\n{sigs}" + ("\n" if sep else ""), after


def _head(text: str, header: str, what: str) -> tuple[list[str], str]:
    """A proof file's head lines (the first checked to be `header`) and the signed `what`
    after the empty line; malformed when either is missing."""
    head, sep, rest = text.partition("\n\n")
    if not sep:
        raise ReceiptError("malformed", f"no empty line before the {what}")
    lines = head.split("\n")
    if lines[0] != header:
        raise ReceiptError("malformed", f"first line is not {header}")
    return lines, rest


@dataclass(frozen=True)
class TlogProof:
    """A parsed ``c2sp.org/tlog-proof@v1``: index, inclusion path, signed checkpoint, extra."""

    index: int
    path: tuple[bytes, ...]
    checkpoint: str
    """The signed checkpoint note, verbatim."""
    extra: bytes | None = None

    def format(self) -> str:
        """The proof file's text."""
        lines = [PROOF_HEADER]
        if self.extra is not None:
            lines.append(f"extra {b64(self.extra)}")
        lines.append(f"index {self.index}")
        lines.extend(b64(h) for h in self.path)
        return "\n".join(lines) + "\n\n" + self.checkpoint

    @classmethod
    def parse(cls, text: str) -> TlogProof:
        """Parse a proof strictly: any deviation from the spec's layout is malformed."""
        lines, note = _head(text, PROOF_HEADER, "checkpoint")
        at = 1
        extra = None
        if len(lines) > at and lines[at].startswith("extra "):
            extra = _unb64(lines[at][len("extra ") :], "extra")
            if not extra:
                raise ReceiptError("malformed", "empty extra (the line is omitted instead)")
            at += 1
        if len(lines) <= at or not lines[at].startswith("index "):
            raise ReceiptError("malformed", "no index line")
        index = lines[at][len("index ") :]
        if not _DECIMAL.fullmatch(index) or int(index) > _MAX_U64:
            raise ReceiptError("malformed", f"bad index {index!r}")
        path = _hash_lines(lines[at + 1 :])
        checked, after = _split_note(note, "checkpoint")
        if after or checked != note:
            raise ReceiptError("malformed", "text after the checkpoint's signatures")
        return cls(int(index), path, note, extra)


@dataclass(frozen=True)
class ConsistencyProof:
    """Two signed checkpoints of one log and the RFC 9162 proof that the newer extends the older."""

    old: str
    new: str
    path: tuple[bytes, ...]

    def format(self) -> str:
        """The proof file's text (see the module docstring)."""
        lines = [CONSISTENCY_HEADER, *(b64(h) for h in self.path)]
        return "\n".join(lines) + "\n\n" + self.old + "\n" + self.new

    @classmethod
    def parse(cls, text: str) -> ConsistencyProof:
        """Parse strictly."""
        lines, notes = _head(text, CONSISTENCY_HEADER, "checkpoints")
        path = _hash_lines(lines[1:])
        old, rest = _split_note(notes, "old checkpoint")
        new, after = _split_note(rest, "new checkpoint")
        if after or not new.endswith("\n") or old + "\n" + new != notes:
            raise ReceiptError("malformed", "not exactly two signed checkpoints")
        return cls(old, new, path)


@dataclass(frozen=True)
class SignedHead:
    """A checkpoint whose signature verified, with what a report states about it."""

    checkpoint: Checkpoint
    tenant_id: str
    partition: int
    key_ids: tuple[int, ...]
    """Key IDs (under the origin) of the verified signatures."""
    signed_at: Decimal | None
    """The ``time`` extension (unix seconds), if present."""
    is_end: bool
    """The chain's deliberate final checkpoint (``end`` extension)."""


@dataclass(frozen=True)
class Receipt:
    """A verified inclusion proof: which row, in which signed tree."""

    leaf: Leaf
    index: int
    head: SignedHead

    @property
    def event_id(self) -> str | None:
        """The payload's ``event_id`` (the payload is canonical JSON), if it has one."""
        try:
            value = json.loads(self.leaf.payload).get("event_id")
        except (ValueError, AttributeError):
            return None
        return value if isinstance(value, str) else None


def verifiers_for(origin: str, keys: Keys) -> list[Verifier]:
    """The verifier keys of ``origin``: each public key named by the origin."""
    if callable(keys):
        return list(keys(origin))
    return [Verifier.from_public_key(origin, bytes(k)) for k in keys]


def _origin_line(note: str) -> str:
    return note.partition("\n")[0]


def open_head(note: str, keys: Keys, deployment: str | None = None) -> SignedHead:
    """Verify a signed agentaudit checkpoint: signature (key name = origin), origin, extensions.

    Raises :class:`ReceiptError` with reason ``malformed``, ``INVALID: signature``,
    ``INVALID: checkpoint`` or ``INVALID: origin``.
    """
    origin = _origin_line(note)
    try:
        verifiers = verifiers_for(origin, keys)
    except NoteError as e:
        raise ReceiptError("INVALID: origin", str(e)) from None
    try:
        cp, opened = open_checkpoint(note, verifiers, origin)
    except MalformedNoteError as e:
        raise ReceiptError("malformed", f"checkpoint note: {e}") from None
    except NoteError as e:
        raise ReceiptError("INVALID: signature", str(e)) from None
    except CheckpointError as e:
        raise ReceiptError("INVALID: checkpoint", str(e)) from None
    try:
        dep, tenant, partition = parse_origin(cp.origin)
    except CheckpointError as e:
        raise ReceiptError("INVALID: origin", str(e)) from None
    if deployment is not None and dep != deployment:
        raise ReceiptError("INVALID: origin", f"deployment {dep!r}, expected {deployment!r}")
    signed_at: Decimal | None = None
    is_end = False
    for ext in cp.extensions:
        if ext == "end":
            is_end = True
        elif ext.startswith("time "):
            if signed_at is not None or not _TIME.fullmatch(ext):
                raise ReceiptError("INVALID: checkpoint", f"bad time line {ext!r}")
            signed_at = Decimal(ext[len("time ") :])
    return SignedHead(
        cp, tenant, partition, tuple(s.key_id for s in opened.verified), signed_at, is_end
    )


def build_proof(
    leaf: bytes, index: int, leaf_hashes: Sequence[bytes], checkpoint_note: str
) -> TlogProof:
    """The proof that ``leaf`` is leaf ``index`` of the tree ``leaf_hashes`` (the checkpoint's
    size exactly). Refuses (``ProofError``) when the hashes do not reproduce the checkpoint's
    root or the leaf is not the one hashed at ``index``: such a proof could never verify.
    The note's signature is not checked here (the prover may not hold the public keys)."""
    cp = Checkpoint.parse(checkpoint_note.partition("\n\n")[0] + "\n")
    if len(leaf_hashes) != cp.size:
        raise ProofError(f"{len(leaf_hashes)} leaf hashes for a checkpoint of size {cp.size}")
    if not 0 <= index < cp.size or leaf_hashes[index] != leaf_hash(leaf):
        raise ProofError(f"the leaf is not leaf {index} of the tree")
    path = inclusion_proof(index, leaf_hashes)
    if root_from_inclusion_proof(index, cp.size, leaf_hashes[index], path) != cp.root_hash:
        raise ProofError("the leaf hashes do not reproduce the checkpoint's root")
    return TlogProof(index, tuple(path), checkpoint_note, leaf)


def verify_proof(
    proof: TlogProof | str, keys: Keys, *, leaf: bytes | None = None, deployment: str | None = None
) -> Receipt:
    """Verify an inclusion proof (the spec's steps 1, 2 and 4; witnesses are not used yet).

    The leaf bytes are ``leaf`` if given (out of band; must equal ``extra`` when both are
    present), else the ``extra`` line. Beyond the spec, agentaudit's leaf names its chain
    and sequence number, so the leaf must also name the checkpoint's chain and
    ``chain_seq == index + 1``. Raises :class:`ReceiptError` with a short verdict.
    """
    p = TlogProof.parse(proof) if isinstance(proof, str) else proof
    data = leaf if leaf is not None else p.extra
    if data is None:
        raise ReceiptError("INVALID: leaf", "no leaf given and no extra line")
    if leaf is not None and p.extra is not None and p.extra != leaf:
        raise ReceiptError("INVALID: leaf", "the extra line is not the given leaf")
    try:
        decoded = decode_leaf(data)
    except LeafError as e:
        raise ReceiptError("INVALID: leaf", str(e)) from None
    head = open_head(p.checkpoint, keys, deployment)
    if (decoded.tenant_id, decoded.partition) != (head.tenant_id, head.partition):
        raise ReceiptError(
            "INVALID: leaf",
            f"leaf of chain {decoded.tenant_id}/p{decoded.partition}, checkpoint of "
            f"{head.tenant_id}/p{head.partition}",
        )
    if decoded.chain_seq != p.index + 1:
        raise ReceiptError(
            "INVALID: index", f"index {p.index} but the leaf's chain_seq is {decoded.chain_seq}"
        )
    size, root = head.checkpoint.size, head.checkpoint.root_hash
    try:
        got = root_from_inclusion_proof(p.index, size, leaf_hash(data), p.path)
    except ProofError as e:
        raise ReceiptError("INVALID: inclusion proof", str(e)) from None
    if got != root:
        raise ReceiptError("INVALID: inclusion proof", "does not lead to the signed root")
    return Receipt(decoded, p.index, head)


def build_consistency(
    old_note: str, new_note: str, leaf_hashes: Sequence[bytes]
) -> ConsistencyProof:
    """The proof that the checkpoint ``new_note`` extends ``old_note``; ``leaf_hashes`` are
    the new tree's (its size exactly). Refuses (``ProofError``) what could never verify."""
    old = Checkpoint.parse(old_note.partition("\n\n")[0] + "\n")
    new = Checkpoint.parse(new_note.partition("\n\n")[0] + "\n")
    if old.origin != new.origin:
        raise ProofError(f"checkpoints of two logs: {old.origin!r} and {new.origin!r}")
    if len(leaf_hashes) != new.size or not old.size <= new.size:
        raise ProofError(f"sizes {old.size} -> {new.size} with {len(leaf_hashes)} leaf hashes")
    path = consistency_proof(old.size, leaf_hashes)
    verify_consistency(old.size, new.size, old.root_hash, new.root_hash, path)
    return ConsistencyProof(old_note, new_note, tuple(path))


def verify_consistency_proof(
    proof: ConsistencyProof | str, keys: Keys, *, deployment: str | None = None
) -> tuple[SignedHead, SignedHead]:
    """Verify both signed checkpoints and that the new one extends the old one.

    Also refuses growth past a checkpoint marked ``end`` (a chain ended on purpose stays
    ended). Raises :class:`ReceiptError`; returns ``(old, new)``.
    """
    p = ConsistencyProof.parse(proof) if isinstance(proof, str) else proof
    old = open_head(p.old, keys, deployment)
    new = open_head(p.new, keys, deployment)
    a, b = old.checkpoint, new.checkpoint
    if a.origin != b.origin:
        raise ReceiptError("INVALID: origin", f"checkpoints of {a.origin!r} and {b.origin!r}")
    try:
        verify_consistency(a.size, b.size, a.root_hash, b.root_hash, p.path)
    except ProofError as e:
        raise ReceiptError("INVALID: inconsistent with previous checkpoint", str(e)) from None
    if old.is_end and b.size != a.size:
        raise ReceiptError("INVALID: inconsistent with previous checkpoint", "grew after its end")
    return old, new
