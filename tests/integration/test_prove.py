"""Receipts end to end (issue 10): real broker, real chDB, the real key ring and sink signing.

Events are sunk and signed by the sink; `agentaudit prove` (the CLI, a separate process that
reaches the test's store through its served endpoint) writes a C2SP tlog-proof; the receipt
verifies against the public keys alone, and any flipped byte makes it invalid.
"""

from __future__ import annotations

import base64
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from agentaudit.anchors import DirectoryAnchor
from agentaudit.broker import ensure_topics
from agentaudit.settings import Settings
from agentaudit.sink.signing import CHECKPOINT_COLUMNS
from agentaudit.store import open_store
from agentaudit.store.migrations import migrate
from agentaudit.store.protocol import Store
from agentaudit.trail.checkpoint import Checkpoint, sign_checkpoint
from agentaudit.trail.note import Signer
from agentaudit.trail.proof import verify_proof
from agentaudit.verify.prove import (
    NotProvable,
    _chain_notes,
    prove_event,
    verify_proof_file,
)
from agentaudit.verify.run import public_keys
from tests.conftest import settings_env
from tests.factories import event_dict, wire
from tests.integration.helpers import produce_raw, sink_until

pytestmark = pytest.mark.integration

TENANTS = ("rc-a", "rc-b")


def _cli(settings: Settings, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**settings_env(settings), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "agentaudit.cli.main", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _events(n: int, offset: int = 0) -> list[tuple[bytes, bytes]]:
    return [
        (TENANTS[i % 2].encode(), wire(event_dict(tenant=TENANTS[i % 2], kind="llm_call")))
        for i in range(offset, offset + n)
    ]


async def _sink(settings: Settings, store: Store, total: int) -> int:
    worker = await sink_until(settings, store, lambda w: w.processor.counters.accepted >= total)
    return worker.checkpoints_signed


def _event(store: Store, tenant: str, seq: int) -> tuple[str, int]:
    """(event_id, partition) of the row at `seq` of one of the tenant's chains."""
    eid, part = store.query(
        "SELECT toString(event_id), kafka_partition FROM agentaudit.events "
        "WHERE tenant_id = {t:String} AND chain_seq = {s:UInt64} ORDER BY kafka_partition LIMIT 1",
        {"t": tenant, "s": seq},
    ).result_rows[0]
    return str(eid), int(part)


def _forge_newest_checkpoint(settings: Settings, store: Store, tenant: str, partition: int) -> str:
    """A copy of the chain's newest checkpoint, signed by a key not ours, dated later, in the
    table and the anchor: a prover that did not check signatures would pick it first."""
    row = list(
        store.query(
            "SELECT * FROM agentaudit.checkpoints WHERE tenant_id = {t:String} "
            "AND kafka_partition = {p:UInt32} ORDER BY tree_size DESC, signed_at DESC LIMIT 1",
            {"t": tenant, "p": partition},
        ).result_rows[0]
    )
    names = list(CHECKPOINT_COLUMNS)
    body = str(row[names.index("note")]).partition("\n\n")[0] + "\n"
    rogue = Signer.generate("rogue").renamed(body.partition("\n")[0])
    row[names.index("note")] = sign_checkpoint(Checkpoint.parse(body), [rogue])
    row[names.index("signed_at")] += timedelta(days=1)
    store.insert("agentaudit.checkpoints", [[v] for v in row], names)
    note, signed_at = str(row[names.index("note")]), row[names.index("signed_at")]
    DirectoryAnchor(settings.checkpoints_dir).append([(tenant, partition, note, signed_at)])
    return note


def _flip_extra(text: str) -> str:
    """The receipt with one byte of the proven payload changed (the leaf stays well formed)."""
    lines = text.split("\n")
    raw = base64.b64decode(lines[1][len("extra ") :])
    at = raw.rindex(b"gpt-5-mini")  # inside the canonical payload, the last field
    forged = raw[:at] + b"gpt-5-maxi" + raw[at + 10 :]
    lines[1] = "extra " + base64.b64encode(forged).decode()
    return "\n".join(lines)


async def test_prove_and_verify_a_receipt(settings: Settings, tmp_path: Path) -> None:
    unsigned = settings.model_copy(update={"checkpoint_interval_s": 0})
    signed = settings.model_copy(update={"checkpoint_interval_s": 0.2})
    await ensure_topics(settings)
    keys = public_keys(settings)
    with open_store(settings, own=True) as store:
        migrate(store)
        # Stored but never signed: no receipt, and the CLI says why (exit 1).
        await produce_raw(settings, _events(20))
        assert await _sink(unsigned, store, 20) == 0
        eid, part = _event(store, TENANTS[0], 2)
        with pytest.raises(NotProvable, match="not yet covered by a signed checkpoint"):
            prove_event(store, settings, eid, keys)
        refused = _cli(settings, "prove", eid, cwd=tmp_path)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "not yet covered" in refused.stderr
        assert not list(tmp_path.glob("*.tlog-proof"))

        # A signing sink covers the earlier rows too (their tree is rebuilt from the store).
        await produce_raw(settings, _events(20, 20))
        assert await _sink(signed, store, 20) >= 1
        # A note signed by a key not ours, the first candidate: the prover must skip it.
        forged = _forge_newest_checkpoint(settings, store, TENANTS[0], part)
        assert _chain_notes(store, settings, TENANTS[0], part, 2, 2**64 - 1)[0] == forged
        done = _cli(settings, "prove", eid, cwd=tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
        path = tmp_path / f"{eid}.tlog-proof"
        text = path.read_text()
        assert text.startswith("c2sp.org/tlog-proof@v1\nextra ")
        assert f"Receipt for event {eid}: valid" in done.stdout
        assert f"chain {TENANTS[0]}/p{part}, chain_seq 2 (index 1)" in done.stdout

        # Checked with nothing but the public keys (no store): valid; tampered: invalid.
        receipt = verify_proof(text, keys.verifiers)
        assert (receipt.event_id, receipt.leaf.chain_seq, receipt.head.partition) == (eid, 2, part)
        assert receipt.head.checkpoint.size >= 2
        ok, lines = verify_proof_file(path, keys)
        assert ok and lines[0] == f"Receipt for event {eid}: valid", lines
        checked = _cli(settings, "verify", "--proof", str(path), cwd=tmp_path)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert f"Receipt for event {eid}: valid" in checked.stdout
        assert "1/1 receipts valid" in checked.stdout
        flipped = tmp_path / "flipped.tlog-proof"
        flipped.write_text(_flip_extra(text))
        refused = _cli(settings, "verify", "--proof", str(flipped), cwd=tmp_path)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert (
            "INVALID: inclusion proof" in refused.stdout and "0/1 receipts valid" in refused.stdout
        )
        for bad_text, verdict in (
            (_flip_extra(text), "INVALID: inclusion proof"),
            (text.replace("index 1\n", "index 2\n"), "INVALID: index"),
            (text[:-8] + ("A" if text[-8] != "A" else "B") + text[-7:], "INVALID: signature"),
        ):
            bad = tmp_path / "bad.tlog-proof"
            bad.write_text(bad_text)
            ok, lines = verify_proof_file(bad, keys)
            assert not ok and verdict in lines[0], lines

        # Consistency: the receipt's checkpoint is extended by the newest after more events.
        size = receipt.head.checkpoint.size
        await produce_raw(settings, _events(20, 40))
        assert await _sink(signed, store, 20) >= 1
        newest = store.query(
            "SELECT max(tree_size) FROM agentaudit.checkpoints WHERE tenant_id = {t:String} "
            "AND kafka_partition = {p:UInt32}",
            {"t": TENANTS[0], "p": part},
        ).result_rows[0][0]
        assert newest > size
        out = tmp_path / "c.tlog-consistency"
        cons = _cli(
            settings,
            "prove",
            "--consistency",
            "--tenant",
            TENANTS[0],
            "--partition",
            str(part),
            "--old",
            str(size),
            "--out",
            str(out),
            cwd=tmp_path,
        )
        assert cons.returncode == 0, cons.stdout + cons.stderr
        checked = _cli(settings, "verify", "--proof", str(out), cwd=tmp_path)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert f"size {size} -> {newest}: valid" in checked.stdout
