"""`agentaudit prove`: receipts from the store (issue 10, "Receipts").

An inclusion receipt (C2SP ``tlog-proof``, :mod:`agentaudit.trail.proof`) for one event is
built from its row (``agentaudit.events`` by ``event_id``), the leaf hashes of its chain
``1..size`` and a signed checkpoint of that size covering the event, taken from the store's
``agentaudit.checkpoints`` and from the anchor directory outside the store. Candidates are
tried newest first; one is used only if the store's leaves reproduce its root *and* the
finished proof verifies against the deployment's public keys, so a receipt is never written
for an unsigned root or for a tree the store no longer holds. Consistency receipts between
two checkpoints of a chain are built the same way.

Reads only; costs O(chain size) hashing per receipt (the inclusion path is recomputed from
the leaf hashes: about 1 s per million rows).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from agentaudit.anchors import DirectoryAnchor
from agentaudit.errors import UserError
from agentaudit.settings import Settings
from agentaudit.sink.trees import row_leaf_hash
from agentaudit.store.protocol import Store
from agentaudit.trail.checkpoint import note_size
from agentaudit.trail.leaf import encode_leaf
from agentaudit.trail.merkle import ProofError
from agentaudit.trail.proof import (
    CONSISTENCY_HEADER,
    ConsistencyProof,
    Receipt,
    ReceiptError,
    SignedHead,
    build_consistency,
    build_proof,
    verify_consistency_proof,
    verify_proof,
)
from agentaudit.trail.pubkeys import PublicKeys
from agentaudit.trail.verdicts import in_use, iso


def key_in_use(head: SignedHead, keys: PublicKeys) -> None:
    """`agentaudit verify`'s key rule for a receipt's checkpoint (ReceiptError ``INVALID:
    signature`` else): it states when it was signed (``time``), and a key that signed it was
    in use then. A retired (perhaps leaked) key's later signature is not the log's: a receipt
    on such a checkpoint verified valid before."""
    cp = head.checkpoint
    if head.signed_at is None:
        raise ReceiptError("INVALID: signature", "no time line: the key's period cannot be checked")
    t = int(head.signed_at)
    used = [k for kid in head.key_ids if (k := keys.key_for(cp.origin, kid)) is not None]
    if not any(in_use(k, t) for k in used):
        names = "; ".join(k.describe() for k in used) or "key ?"
        raise ReceiptError(
            "INVALID: signature", f"signed at {iso(t)}, outside the key's use ({names})"
        )


class NotProvable(UserError):
    """No receipt can be made (unknown event, no covering signed checkpoint, store disagrees)."""

    exit_code = 1


_EVENT_SQL = (
    "SELECT tenant_id, kafka_partition, chain_seq, cost_usd, priced, pricing_version, payload "
    "FROM agentaudit.events WHERE event_id = {id:UUID} AND kafka_topic = {topic:String}"
)
_NOTES_SQL = (
    "SELECT note, tree_size FROM agentaudit.checkpoints "
    "WHERE tenant_id = {t:String} AND kafka_partition = {p:UInt32} "
    "AND tree_size >= {lo:UInt64} AND tree_size <= {hi:UInt64} "
    "ORDER BY tree_size DESC, signed_at DESC LIMIT {limit:UInt32}"
)
_LEAVES_SQL = (
    "SELECT chain_seq, leaf_hash, if(empty(leaf_hash), payload, ''), cost_usd, priced, "
    "pricing_version FROM agentaudit.events "
    "WHERE kafka_topic = {topic:String} AND tenant_id = {t:String} "
    "AND kafka_partition = {p:UInt32} AND chain_seq <= {n:UInt64} ORDER BY chain_seq"
)
#: Signed notes tried per receipt: a chain is re-signed every interval, so the newest few
#: notes usually share one size; more candidates only matter when the newest are broken.
_MAX_CANDIDATES = 50


@dataclass(frozen=True)
class Proved:
    """An inclusion receipt, verified, and its text."""

    event_id: str
    receipt: Receipt
    text: str


def _chain_notes(
    store: Store, settings: Settings, tenant: str, partition: int, lo: int, hi: int
) -> list[str]:
    """Signed notes of the chain with ``lo <= size <= hi``, largest size first, newest first;
    from the anchor directory and the store (notes found in both are tried once)."""
    found: list[tuple[int, int, str]] = []  # (size, source rank, note)
    for note in reversed(DirectoryAnchor(settings.checkpoints_dir).notes(tenant, partition)):
        size = note_size(note)
        if size is not None and lo <= size <= hi:
            found.append((size, 0, note))
    params = {"t": tenant, "p": partition, "lo": lo, "hi": hi, "limit": _MAX_CANDIDATES}
    rows = store.query(_NOTES_SQL, params).result_rows
    found.extend((int(size), 1, str(note)) for note, size in rows)
    seen: set[str] = set()
    out: list[str] = []
    # Stable sort: within one size, the anchor's newest first, then the store's newest.
    for _, _, note in sorted(found, key=lambda f: (-f[0], f[1])):
        if note not in seen:
            seen.add(note)
            out.append(note)
    return out[:_MAX_CANDIDATES]


def _leaf_hashes(
    store: Store, settings: Settings, tenant: str, partition: int, size: int
) -> list[bytes]:
    """The chain's leaf hashes 1..``size`` (stored, or recomputed for pre-0013 rows)."""
    params = {"topic": settings.events_topic, "t": tenant, "p": partition, "n": size}
    out: list[bytes] = []
    for seq, stored, payload, cost, priced, version in store.query(_LEAVES_SQL, params).result_rows:
        if int(seq) != len(out) + 1:
            raise NotProvable(
                f"chain {tenant}/p{partition}: chain_seq {seq} follows {len(out)} in the store "
                f"(a gap or a duplicate): run `agentaudit verify --tenant {tenant}`"
            )
        out.append(
            row_leaf_hash(stored, tenant, partition, int(seq), payload, cost, priced, str(version))
        )
    return out


def _event_row(store: Store, settings: Settings, event_id: str) -> tuple[Any, ...]:
    try:
        uid = str(uuid.UUID(event_id))
    except ValueError:
        raise UserError(f"{event_id!r} is not an event id (a UUID)") from None
    rows = store.query(
        _EVENT_SQL,
        {"id": uid, "topic": settings.events_topic},
        column_formats={"payload": "bytes"},  # type: ignore[call-arg]
    ).result_rows
    if not rows:
        raise NotProvable(f"event {uid} is not in the trail")
    if len(rows) > 1:
        raise NotProvable(
            f"event {uid} is stored {len(rows)} times: run `agentaudit verify --tenant "
            f"{rows[0][0]}`"
        )
    return tuple(rows[0])


def prove_event(store: Store, settings: Settings, event_id: str, keys: PublicKeys) -> Proved:
    """The verified inclusion receipt of ``event_id`` in the newest signed checkpoint covering
    it; :class:`NotProvable` says why there is none."""
    tenant, partition, seq, cost, priced, version, payload = _event_row(store, settings, event_id)
    tenant, partition, seq = str(tenant), int(partition), int(seq)
    body = payload if isinstance(payload, bytes) else str(payload).encode()
    leaf = encode_leaf(tenant, partition, seq, Decimal(cost), bool(priced), str(version), body)
    notes = _chain_notes(store, settings, tenant, partition, seq, 2**64 - 1)
    if not notes:
        raise NotProvable(
            f"event {event_id} (chain {tenant}/p{partition}, seq {seq}) is not yet covered by a "
            "signed checkpoint: wait for the next one (AGENTAUDIT_CHECKPOINT_INTERVAL_S) and retry"
        )
    hashes = _leaf_hashes(store, settings, tenant, partition, note_size(notes[0]) or 0)
    why = _Reasons()
    for note in notes:
        size = note_size(note) or 0
        if size > len(hashes):
            why.add(f"the store holds {len(hashes)} rows of a checkpoint of size {size}")
            continue
        try:
            text = build_proof(leaf, seq - 1, hashes[:size], note).format()
            receipt = verify_proof(text, keys.verifiers)
            key_in_use(receipt.head, keys)
        except ProofError as e:
            why.add(str(e))
        except ReceiptError as e:
            why.add(str(e))
        else:
            return Proved(event_id, receipt, text)
    raise NotProvable(
        f"no signed checkpoint of chain {tenant}/p{partition} proves event {event_id}: "
        f"{why}; run `agentaudit verify --tenant {tenant}`"
    )


def prove_consistency(
    store: Store,
    settings: Settings,
    tenant: str,
    partition: int,
    old: int,
    keys: PublicKeys,
    new: int | None = None,
) -> tuple[ConsistencyProof, SignedHead, SignedHead]:
    """A verified receipt that the chain's checkpoint of size ``new`` (default: the newest)
    extends its checkpoint of size ``old``."""
    hi = new if new is not None else 2**64 - 1
    if new is not None and new < old:
        raise UserError(f"--new {new} is smaller than --old {old}")
    olds = _chain_notes(store, settings, tenant, partition, old, old)
    news = _chain_notes(store, settings, tenant, partition, old, hi)
    if not olds or not news:
        which = old if not olds else new
        raise NotProvable(f"chain {tenant}/p{partition} has no signed checkpoint of size {which}")
    newest = note_size(news[0]) or 0
    if new is not None and newest != new:
        raise NotProvable(f"chain {tenant}/p{partition} has no signed checkpoint of size {new}")
    news = [n for n in news if note_size(n) == newest]
    hashes = _leaf_hashes(store, settings, tenant, partition, newest)
    why = _Reasons()
    if len(hashes) < newest:
        why.add(f"the store holds {len(hashes)} rows of a checkpoint of size {newest}")
        news = []
    for new_note in news:
        for old_note in olds:
            try:
                proof = build_consistency(old_note, new_note, hashes)
                a, b = verify_consistency_proof(proof.format(), keys.verifiers)
                key_in_use(a, keys)
                key_in_use(b, keys)
            except (ProofError, ReceiptError) as e:
                why.add(str(e))
            else:
                return proof, a, b
    raise NotProvable(
        f"no consistency receipt for chain {tenant}/p{partition} from size {old} to {newest}: "
        f"{why}; run `agentaudit verify --tenant {tenant}`"
    )


class _Reasons:
    """Distinct reasons candidates were refused, for one error message."""

    def __init__(self) -> None:
        self._seen: dict[str, None] = {}

    def add(self, why: str) -> None:
        self._seen.setdefault(why, None)

    def __str__(self) -> str:
        return "; ".join(self._seen) or "no candidate"


def write_receipt(path: Path, text: str) -> None:
    """Write a receipt file's text exactly (no newline translation: the bytes are verified)."""
    path.write_text(text, encoding="utf-8", newline="")


def receipt_lines(receipt: Receipt, keys: PublicKeys | None) -> list[str]:
    """validate-logs style lines describing a verified inclusion receipt."""
    head = receipt.head
    leaf = receipt.leaf
    return [
        f"Receipt for event {receipt.event_id or '?'}: valid",
        (
            f"  chain {leaf.tenant_id}/p{leaf.partition}, chain_seq {leaf.chain_seq} "
            f"(index {receipt.index}), cost_usd {leaf.cost_usd} "
            f"({'priced' if leaf.priced else 'unpriced'}, pricing {leaf.pricing_version or '-'})"
        ),
        *head_lines(head, keys),
    ]


def head_lines(head: SignedHead, keys: PublicKeys | None) -> list[str]:
    """Lines describing one verified signed checkpoint: size, time, end, signing key."""
    cp = head.checkpoint
    when = f", signed at unix {head.signed_at}" if head.signed_at is not None else ""
    end = ", final (end of chain)" if head.is_end else ""
    lines = [f"  checkpoint {cp.origin} size {cp.size} root {cp.root_hash.hex()[:16]}…{when}{end}"]
    for kid in head.key_ids:
        key = keys.key_for(cp.origin, kid) if keys is not None else None
        lines.append(f"  signed by key ID {kid:08x}" + (f": {key.describe()}" if key else ""))
    return lines


def default_consistency_name(tenant: str, partition: int, old: int, new: int) -> str:
    """``<tenant>-p<partition>-<old>-<new>.tlog-consistency``."""
    return f"{tenant}-p{partition}-{old}-{new}.tlog-consistency"


__all__ = [
    "NotProvable",
    "Proved",
    "default_consistency_name",
    "head_lines",
    "prove_consistency",
    "prove_event",
    "receipt_lines",
    "verify_proof_file",
    "write_receipt",
]


def verify_proof_file(path: Path, keys: PublicKeys) -> tuple[bool, list[str]]:
    """Check a receipt file (``.tlog-proof`` or ``.tlog-consistency``, told apart by its first
    line) against the public keys alone, nothing from the store: ``(valid, report lines)``."""
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as e:
        return False, [f"Receipt {path}: not found ({e.strerror or e})"]
    except UnicodeDecodeError:
        return False, [f"Receipt {path}: INVALID: malformed: not UTF-8"]
    try:
        if text.startswith(CONSISTENCY_HEADER + "\n"):
            a, b = verify_consistency_proof(text, keys.verifiers)
            key_in_use(a, keys)
            key_in_use(b, keys)
            old, new = a.checkpoint, b.checkpoint
            lines = [f"Consistency {old.origin} size {old.size} -> {new.size}: valid"]
            return True, lines + head_lines(a, keys) + head_lines(b, keys)
        receipt = verify_proof(text, keys.verifiers)
        key_in_use(receipt.head, keys)
        return True, receipt_lines(receipt, keys)
    except ReceiptError as e:
        return False, [f"Receipt {path}: {e}"]
