"""An export bundle checked against the auditor's own public keys. Whoever makes a bundle can
edit it, re-sign every checkpoint with a key of theirs and put that key's public-key file in
it; only a key the auditor got elsewhere catches that. `verify.py --keys FILE` and `agentaudit
verify --export DIR --keys FILE` use that file (before: verify.py had no such option and the
CLI silently ignored --keys for a bundle: valid, exit 0)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer

from agentaudit.cli.verify import verify
from agentaudit.trail import bundle
from agentaudit.trail import verdicts as vd
from agentaudit.trail.note import Signer
from agentaudit.trail.pubkeys import PublicKeys
from tests.unit.trail.chains import KEYS, ORIGIN, PART, T0, TENANT, make_rows, note, relink

FORGER = Signer("agentaudit", bytes(range(7, 39)))


def _bundle(root: Path) -> Path:
    """A forged bundle: one payload edited, the chain relinked, re-signed by FORGER, whose
    public-key file replaces the deployment's. Returns the deployment's genuine key file."""
    rows = make_rows(4)
    rows[1] = (rows[1][0], rows[1][1].replace(b'"n":2', b'"n":9'), *rows[1][2:])
    relink(rows, 1)
    rel = bundle.chain_dir(TENANT, PART)
    (root / rel).mkdir(parents=True)
    with (root / rel / "rows.jsonl").open("w") as f:
        for r in rows:
            d = {
                "chain_seq": r[0],
                "payload": r[1].decode(),  # type: ignore[union-attr]
                "cost_usd": str(r[2]),
                "priced": r[3],
                "pricing_version": r[4],
                "prev_hash": r[5],
                "row_hash": r[6],
                "leaf_hash": r[7],
                "ingested_at_us": int(r[8] * 1_000_000),
            }
            f.write(json.dumps(d) + "\n")
    cp = {"note": note(rows, 4, signer=FORGER), "sources": ["anchor", "store"], "frontier": None}
    (root / rel / "checkpoints.jsonl").write_text(json.dumps(cp) + "\n")
    chain = {
        "tenant_id": TENANT,
        "partition": PART,
        "origin": ORIGIN,
        "rows": f"{rel}/rows.jsonl",
        "checkpoints": f"{rel}/checkpoints.jsonl",
        "sources": ["anchor", "store"],
        "start_size": 0,
        "start_frontier": [],
        "start_prev_hash": "0" * 64,
    }
    manifest = {"format": bundle.FORMAT, "chains": [chain]}
    (root / bundle.MANIFEST).write_text(json.dumps(manifest))
    (root / bundle.PUBLIC_KEYS).write_text(PublicKeys.first(FORGER.public_key, T0).dumps())
    genuine = root.parent / "genuine-keys.json"
    genuine.write_text(KEYS.dumps())
    return genuine


def test_a_bundle_re_signed_with_the_forgers_key_fails_against_the_auditors_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "bundle"
    genuine = _bundle(root)
    assert vd.summary(bundle.verify_bundle(root))[1]  # its own keys: it cannot tell
    reports = bundle.verify_bundle(root, keys=KEYS)
    assert not vd.summary(reports)[1]
    assert any(ln.verdict == vd.SIGNATURE for r in reports for ln in r.lines)

    assert bundle.main([str(root)]) == 0
    assert bundle.main(["--keys", str(genuine), str(root)]) == 1
    assert bundle.main(["--keys", str(tmp_path / "nope.json"), str(root)]) == 2
    with pytest.raises(typer.Exit) as exit_:
        verify(export=root, keys_file=genuine)
    assert exit_.value.exit_code == 1
    assert "INVALID: signature" in capsys.readouterr().out
