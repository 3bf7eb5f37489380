"""`agentaudit verify --proof` applies verify's key rule: a receipt whose checkpoint a retired
(perhaps leaked) key signed after its retirement, or that states no signing time, is INVALID:
signature. Before, any signature by any key ever listed verified valid."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from agentaudit.trail.checkpoint import Checkpoint, sign_checkpoint
from agentaudit.trail.leaf import encode_leaf
from agentaudit.trail.note import Signer
from agentaudit.trail.proof import build_consistency, build_proof
from agentaudit.trail.pubkeys import PublicKeys
from agentaudit.verify.prove import verify_proof_file
from tests.unit.trail.chains import BASE, KEY, ORIGIN, PART, T0, TENANT, make_rows, note, tree_of

NEW = Signer("agentaudit", bytes(range(1, 33)))
# KEY signed until BASE + 1000 s (BASE is T0 + 1000 s), NEW since.
KEYS = PublicKeys.first(KEY.public_key, T0).rotated(NEW.public_key, T0 + timedelta(seconds=2000))
LATER = BASE + 3000
ROWS = make_rows(4)
HASHES = [bytes.fromhex(r[7]) for r in ROWS]


def _receipt(tmp_path: Path, checkpoint: str) -> Path:
    seq, payload, cost, priced, version = ROWS[1][:5]
    leaf = encode_leaf(TENANT, PART, seq, cost, priced, version, payload)  # type: ignore[arg-type]
    path = tmp_path / "r.tlog-proof"
    path.write_text(build_proof(leaf, seq - 1, HASHES, checkpoint).format())
    return path


def test_a_receipt_signed_while_its_key_was_current_is_valid(tmp_path: Path) -> None:
    for cp in (note(ROWS, 4), note(ROWS, 4, t=LATER, signer=NEW)):
        ok, lines = verify_proof_file(_receipt(tmp_path, cp), KEYS)
        assert ok, lines


def test_a_retired_keys_later_signature_is_invalid(tmp_path: Path) -> None:
    ok, lines = verify_proof_file(_receipt(tmp_path, note(ROWS, 4, t=LATER)), KEYS)
    assert not ok and "INVALID: signature" in lines[0] and "outside the key's use" in lines[0]


def test_a_checkpoint_without_a_time_line_is_invalid(tmp_path: Path) -> None:
    untimed = sign_checkpoint(Checkpoint(ORIGIN, 4, tree_of(ROWS, 4).root()), [KEY.renamed(ORIGIN)])
    ok, lines = verify_proof_file(_receipt(tmp_path, untimed), KEYS)
    assert not ok and "INVALID: signature" in lines[0], lines


def test_a_consistency_receipt_to_a_retired_keys_later_checkpoint_is_invalid(
    tmp_path: Path,
) -> None:
    path = tmp_path / "c.tlog-consistency"
    for t, valid in ((BASE + 4, True), (LATER, False)):
        path.write_text(build_consistency(note(ROWS, 2), note(ROWS, 4, t=t), HASHES).format())
        ok, lines = verify_proof_file(path, KEYS)
        assert ok is valid, lines
