"""The mutation corpus of issue 10: every way an attacker with store access (or write access to
the anchor directory) changes the trail is caught by `agentaudit verify` with the right verdict.

One signed store is built once for the module (real broker, real SinkWorker signing every
0.2 s, three tenants, stopped cleanly so each chain ends with a handoff checkpoint), in two
phases with a copy of the store taken in between (the "earlier copy" a rolled-back store is
restored from). Each test copies the store and the anchor directory, applies ONE mutation the
way an attacker would (SQL through the store, or files in the anchor directory), runs
`agentaudit verify` as a subprocess on the copy and checks its exit status and verdict lines:
the right verdict for the right chain and row range, and every other chain still valid.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from agentaudit.anchors import DirectoryAnchor
from agentaudit.broker import LocalBroker
from agentaudit.keyring import KeyRing
from agentaudit.settings import Settings
from agentaudit.sink.rows import INGEST_COLUMNS, INGEST_TABLE
from agentaudit.store import open_store
from agentaudit.store.protocol import Store
from agentaudit.trail.checkpoint import Checkpoint, sign_checkpoint
from agentaudit.trail.leaf import encode_leaf
from agentaudit.trail.merkle import leaf_hash
from agentaudit.trail.note import Signer
from agentaudit.trail.verdicts import (
    DERIVED,
    EXTRA,
    INCONSISTENT,
    MISSING,
    NOT_FOUND,
    REORDERED,
    ROW_HASH,
    SIGNATURE,
    VALID,
)
from agentaudit_schemas.canonical import chain_hash
from tests.conftest import settings_env
from tests.factories import event_dict, wire
from tests.integration.helpers import scalar
from tests.integration.signed_trail import (
    BATCH,
    CHAIN_ROWS,
    PHASE1,
    Chain,
    Trail,
    build_trail,
    copy_trail,
)
from tests.integration.verdict_lines import Verified, run_lines, run_verify
from tests.integration.verdict_lines import assert_caught as caught

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def trail(broker: LocalBroker, tmp_path_factory: pytest.TempPathFactory) -> Trail:
    return build_trail(broker, tmp_path_factory.mktemp("signed-trail"))


@pytest.fixture
def copy(trail: Trail, tmp_path: Path) -> Settings:
    """Settings of a private copy of the signed store and its anchor directory."""
    return copy_trail(trail, trail.settings.data_dir, tmp_path)


@contextmanager
def _store(settings: Settings) -> Iterator[Store]:
    with open_store(settings, own=True) as store:
        yield store


def _one(store: Store, sql: str, params: dict[str, Any]) -> dict[str, Any]:
    result = store.query(sql, params)
    assert len(result.result_rows) == 1, (sql, params, result.result_rows)
    return dict(zip(result.column_names, result.result_rows[0], strict=True))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _row(store: Store, chain: Chain, seq: int) -> dict[str, Any]:
    return _one(
        store,
        "SELECT * FROM agentaudit.events WHERE tenant_id = {t:String} AND "
        "kafka_partition = {p:UInt32} AND chain_seq = {s:UInt64}",
        {"t": chain[0], "p": chain[1], "s": seq},
    )


def _seq_of(store: Store, chain: Chain, kind: str, at_least: int) -> int:
    """The first `kind` row of the chain at or after seq `at_least`."""
    return int(
        scalar(
            store,
            "SELECT min(chain_seq) FROM agentaudit.events WHERE tenant_id = "
            "{t:String} AND kafka_partition = {p:UInt32} AND type = {k:String} AND "
            "chain_seq >= {s:UInt64}",
            {"t": chain[0], "p": chain[1], "k": kind, "s": at_least},
        )
    )


def _alter(store: Store, sql: str, **params: Any) -> None:
    """An ALTER … UPDATE/DELETE applied before it returns, as an attacker would run it."""
    store.command(f"{sql} SETTINGS mutations_sync = 2", params)


def _where(chain: Chain) -> str:
    return f"tenant_id = '{chain[0]}' AND kafka_partition = {chain[1]}"


def _verify(settings: Settings) -> Verified:
    return run_verify(settings)


def assert_caught(
    result: Verified,
    trail: Trail,
    chain: Chain,
    expected: list[tuple[str, int | None]],
    allowed: set[str],
    *,
    others_valid: bool = True,
) -> None:
    """`chain` caught with the `expected` verdicts, only `allowed` ones; the other chains
    valid (unless told otherwise)."""
    others = [trail.origin(c) for c in trail.chains if c != chain] if others_valid else []
    caught(result, trail.origin(chain), expected, allowed, others)


# --- the corpus -----------------------------------------------------------------------------


def test_an_untouched_copy_verifies_valid(trail: Trail, copy: Settings) -> None:
    result = _verify(copy)
    assert result.code == 0, str(result)
    for chain in trail.chains:
        lines = result.of(trail.origin(chain))
        assert lines and all(v.is_(VALID) for v in lines), str(result)
        assert any(v.rows() is not None for v in lines), f"no row range of {chain}\n{result}"
    total = CHAIN_ROWS * len(trail.chains)
    m = re.search(r"(\d+)/(\d+) checkpoints valid, (\d+)/(\d+) rows valid", result.output)
    assert m, str(result)
    assert m[1] == m[2] and int(m[2]) >= 5 * len(trail.chains), str(result)
    assert (int(m[3]), int(m[4])) == (total, total), str(result)


def test_payload_edited(trail: Trail, copy: Settings) -> None:
    chain = trail.chains[0]
    with _store(copy) as store:
        seq = _seq_of(store, chain, "tool_call", CHAIN_ROWS // 2)
        before = _text(_row(store, chain, seq)["payload"])
        assert '"side_effect":"read"' in before
        # Hide that the tool wrote: a field no typed column derives from.
        _alter(
            store,
            "ALTER TABLE agentaudit.events UPDATE payload = replace(payload, "
            '\'"side_effect":"read"\', \'"side_effect":"write"\') WHERE '
            f"{_where(chain)} AND chain_seq = {seq}",
        )
        assert _text(_row(store, chain, seq)["payload"]) != before
    assert_caught(_verify(copy), trail, chain, [(ROW_HASH, seq)], {ROW_HASH})


def test_middle_row_deleted(trail: Trail, copy: Settings) -> None:
    chain, seq = trail.chains[1], CHAIN_ROWS // 2
    with _store(copy) as store:
        _alter(
            store,
            f"ALTER TABLE agentaudit.events DELETE WHERE {_where(chain)} AND chain_seq = {seq}",
        )
        assert scalar(store, f"SELECT count() FROM agentaudit.events WHERE {_where(chain)}") == (
            CHAIN_ROWS - 1
        )
    assert_caught(_verify(copy), trail, chain, [(MISSING, seq)], {MISSING})


def test_tail_rows_deleted(trail: Trail, copy: Settings) -> None:
    chain = trail.chains[2]
    with _store(copy) as store:
        _alter(
            store,
            f"ALTER TABLE agentaudit.events DELETE WHERE {_where(chain)} AND "
            f"chain_seq > {CHAIN_ROWS - 5}",
        )
        assert scalar(
            store, f"SELECT max(chain_seq) FROM agentaudit.events WHERE {_where(chain)}"
        ) == (CHAIN_ROWS - 5)
    # The anchored checkpoints say the chain is longer.
    assert_caught(_verify(copy), trail, chain, [(MISSING, CHAIN_ROWS)], {MISSING})


def test_forged_row_appended_with_recomputed_hashes(trail: Trail, copy: Settings) -> None:
    chain = trail.chains[0]
    tenant, part = chain
    seq = CHAIN_ROWS + 1
    with _store(copy) as store:
        last = _row(store, chain, CHAIN_ROWS)
        forged = wire(event_dict(tenant=tenant, kind="tool_call"))
        prev = _text(last["row_hash"])
        cost, priced, version = Decimal(0), True, ""  # what the sink derives for a tool call
        leaf = leaf_hash(encode_leaf(tenant, part, seq, cost, priced, version, forged)).hex()
        # Through the ingest table, like the sink: the typed columns agree with the payload.
        store.insert(
            INGEST_TABLE,
            [
                [forged],
                [cost],
                [priced],
                [version],
                [last["kafka_topic"]],
                [part],
                [int(last["kafka_offset"]) + 1],
                [int(last["log_epoch"])],
                [seq],
                [prev],
                [chain_hash(prev, forged)],
                [leaf],
                [0],
            ],
            INGEST_COLUMNS,
        )
        assert _text(_row(store, chain, seq)["prev_hash"]) == prev
    # After the chain's handoff checkpoint no row may follow that no checkpoint covers.
    assert_caught(_verify(copy), trail, chain, [(EXTRA, seq)], {EXTRA})


def test_derived_cost_changed(trail: Trail, copy: Settings) -> None:
    chain = trail.chains[1]
    with _store(copy) as store:
        seq = _seq_of(store, chain, "llm_call", CHAIN_ROWS // 3)
        assert _row(store, chain, seq)["cost_usd"] > 0
        _alter(
            store,
            "ALTER TABLE agentaudit.events UPDATE cost_usd = 0 WHERE "
            f"{_where(chain)} AND chain_seq = {seq}",
        )
        assert _row(store, chain, seq)["cost_usd"] == 0
    result = _verify(copy)
    # The leaf commits to the cost (row hash); a verifier re-pricing the payload also says so.
    assert_caught(result, trail, chain, [], {ROW_HASH, DERIVED})
    assert any(
        (v.is_(ROW_HASH) or v.is_(DERIVED)) and v.covers(seq)
        for v in result.failing(trail.origin(chain))
    ), str(result)


def _zero_cost_with_leaf_hash(store: Store, chain: Chain) -> int:
    """Set an llm_call's cost to 0 and recompute its stored leaf hash (a careful attacker)."""
    tenant, part = chain
    seq = _seq_of(store, chain, "llm_call", CHAIN_ROWS // 3)
    row = _row(store, chain, seq)
    payload = _text(row["payload"]).encode()
    leaf = leaf_hash(
        encode_leaf(
            tenant, part, seq, Decimal(0), bool(row["priced"]), str(row["pricing_version"]), payload
        )
    ).hex()
    _alter(
        store,
        "ALTER TABLE agentaudit.events UPDATE cost_usd = 0, leaf_hash = "
        f"'{leaf}' WHERE {_where(chain)} AND chain_seq = {seq}",
    )
    assert _text(_row(store, chain, seq)["leaf_hash"]) == leaf
    return seq


def test_derived_cost_changed_with_the_leaf_hash_recomputed(trail: Trail, copy: Settings) -> None:
    """The attacker also recomputes the row's stored leaf hash: only the signed root (and the
    payload's own price) can tell."""
    chain = trail.chains[1]
    with _store(copy) as store:
        seq = _zero_cost_with_leaf_hash(store, chain)
    result = _verify(copy)
    assert_caught(result, trail, chain, [], {ROW_HASH, DERIVED})
    assert any(
        (v.is_(ROW_HASH) or v.is_(DERIVED)) and v.covers(seq)
        for v in result.failing(trail.origin(chain))
    ), str(result)


def test_an_auditors_export_catches_a_cost_changed_with_its_leaf_hash(
    trail: Trail, copy: Settings, tmp_path: Path
) -> None:
    """The same mutation, exported for an auditor: the bundle's own verifier (Python and
    `cryptography` only, run outside the repository) has no pricing table, only the signed
    roots, and the rows no longer reproduce them."""
    chain = trail.chains[1]
    with _store(copy) as store:
        seq = _zero_cost_with_leaf_hash(store, chain)
    out = tmp_path / "bundle"
    env = {**settings_env(copy), "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, "-m", "agentaudit.cli.main", "export", str(out), "--tenant", chain[0]],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = run_lines(
        [sys.executable, str(out / "verify.py")], {"PATH": os.environ["PATH"]}, cwd=tmp_path
    )
    caught(result, trail.origin(chain), [(ROW_HASH, seq)], {ROW_HASH})


def test_typed_column_user_id_changed(trail: Trail, copy: Settings) -> None:
    chain = trail.chains[2]
    seq = CHAIN_ROWS // 2
    with _store(copy) as store:
        assert _row(store, chain, seq)["user_id"].startswith("user-")
        _alter(
            store,
            "ALTER TABLE agentaudit.events UPDATE user_id = 'someone-else' WHERE "
            f"{_where(chain)} AND chain_seq = {seq}",
        )
        assert _row(store, chain, seq)["user_id"] == "someone-else"
    result = _verify(copy)
    assert_caught(result, trail, chain, [(DERIVED, seq)], {DERIVED})
    assert any(
        v.is_(DERIVED) and "user_id" in v.verdict for v in result.failing(trail.origin(chain))
    ), str(result)


def test_rows_reordered(trail: Trail, copy: Settings) -> None:
    chain = trail.chains[0]
    a, b = CHAIN_ROWS // 2, CHAIN_ROWS // 2 + 1
    with _store(copy) as store:
        ids = (_row(store, chain, a)["event_id"], _row(store, chain, b)["event_id"])
        _alter(
            store,
            f"ALTER TABLE agentaudit.events UPDATE chain_seq = if(chain_seq = {a}, {b}, "
            f"{a}) WHERE {_where(chain)} AND chain_seq IN ({a}, {b})",
        )
        assert (_row(store, chain, b)["event_id"], _row(store, chain, a)["event_id"]) == ids
    assert_caught(_verify(copy), trail, chain, [(REORDERED, a), (REORDERED, b)], {REORDERED})


def test_two_tenants_rows_swapped(trail: Trail, copy: Settings) -> None:
    """Each row moved into the other tenant's chain at the other's position, carrying that
    position's hashes (so each chain's prev/row links still line up around it): billing and
    the audit trail now attribute each event to the other tenant."""
    one, two = trail.chains[0], trail.chains[1]
    i, j = CHAIN_ROWS // 3, CHAIN_ROWS // 2
    with _store(copy) as store:
        x, y = _row(store, one, i), _row(store, two, j)
        # (A subquery: in the outer SELECT the REPLACE aliases would shadow the columns in WHERE.)
        for src, dst in ((x, y), (y, x)):
            store.command(
                "INSERT INTO agentaudit.events SELECT * REPLACE ({t:String} AS tenant_id, "
                "{p:UInt32} AS kafka_partition, {s:UInt64} AS chain_seq, {ph:String} AS prev_hash, "
                "{rh:String} AS row_hash, {lh:String} AS leaf_hash) FROM (SELECT * FROM "
                "agentaudit.events WHERE tenant_id = {st:String} AND event_id = {e:UUID})",
                {
                    "t": dst["tenant_id"],
                    "p": dst["kafka_partition"],
                    "s": dst["chain_seq"],
                    "ph": _text(dst["prev_hash"]),
                    "rh": _text(dst["row_hash"]),
                    "lh": _text(dst["leaf_hash"]),
                    "st": src["tenant_id"],
                    "e": str(src["event_id"]),
                },
            )
        _alter(
            store,
            "ALTER TABLE agentaudit.events DELETE WHERE (tenant_id, event_id) IN "
            f"(('{one[0]}', toUUID('{x['event_id']}')), ('{two[0]}', toUUID('{y['event_id']}')))",
        )
        assert _row(store, one, i)["event_id"] == y["event_id"]
        assert _row(store, two, j)["event_id"] == x["event_id"]
    result = _verify(copy)
    assert_caught(result, trail, one, [(ROW_HASH, i)], {ROW_HASH, DERIVED}, others_valid=False)
    assert_caught(result, trail, two, [(ROW_HASH, j)], {ROW_HASH, DERIVED}, others_valid=False)
    assert result.of(trail.origin(trail.chains[2]))
    assert not result.failing(trail.origin(trail.chains[2])), str(result)


def _anchor_files(settings: Settings, chain: Chain) -> list[Path]:
    files = sorted((settings.checkpoints_dir / chain[0] / f"p{chain[1]}").glob("*.jsonl"))
    assert files, f"no anchored checkpoints of {chain}"
    return files


def test_anchor_checkpoint_file_deleted(trail: Trail, copy: Settings) -> None:
    chain = trail.chains[1]
    for path in _anchor_files(copy, chain):
        path.unlink()
    assert DirectoryAnchor(copy.checkpoints_dir).notes(*chain) == []
    # The store's checkpoints table still holds them: found in one place only.
    assert_caught(_verify(copy), trail, chain, [(NOT_FOUND, None)], {NOT_FOUND})


def test_anchor_checkpoint_file_replaced(trail: Trail, copy: Settings) -> None:
    """The file is rewritten with one checkpoint claiming another root: its signature fails,
    and the original note is left in the store only."""
    chain = trail.chains[2]
    path = _anchor_files(copy, chain)[0]
    lines = path.read_text().splitlines()
    # A note anchored once (a chain re-signed within the same second repeats a note verbatim).
    k = next(k for k in range(len(lines) // 2, len(lines)) if lines.count(lines[k]) == 1)
    old = re.search(r"\\n([A-Za-z0-9+/]{43}=)\\n", lines[k])
    assert old, lines[k]
    root = old[1]
    forged = ("A" if root[0] != "A" else "B") + root[1:]
    lines[k] = lines[k].replace(root, forged, 1)
    path.write_text("\n".join(lines) + "\n")
    assert forged in DirectoryAnchor(copy.checkpoints_dir).notes(*chain)[k]
    assert_caught(
        _verify(copy), trail, chain, [(SIGNATURE, None), (NOT_FOUND, None)], {SIGNATURE, NOT_FOUND}
    )


def test_checkpoint_row_deleted_from_the_table_only(trail: Trail, copy: Settings) -> None:
    chain = trail.chains[0]
    notes = DirectoryAnchor(copy.checkpoints_dir).notes(*chain)
    note = notes[len(notes) // 2]
    with _store(copy) as store:
        _alter(store, "ALTER TABLE agentaudit.checkpoints DELETE WHERE note = {n:String}", n=note)
        assert (
            scalar(
                store,
                "SELECT count() FROM agentaudit.checkpoints WHERE note = {n:String}",
                {"n": note},
            )
            == 0
        )
    assert_caught(_verify(copy), trail, chain, [(NOT_FOUND, None)], {NOT_FOUND})


def test_fork_signed_with_another_key(trail: Trail, copy: Settings) -> None:
    """A checkpoint of a rewritten history, signed with a key that is not the deployment's,
    appended to the anchor directory."""
    chain = trail.chains[1]
    origin = trail.origin(chain)
    fork = sign_checkpoint(
        Checkpoint(origin, CHAIN_ROWS, b"\x07" * 32, (f"time {int(time.time())}",)),
        [Signer.generate(origin)],
    )
    DirectoryAnchor(copy.checkpoints_dir).append([(chain[0], chain[1], fork, datetime.now(UTC))])
    assert_caught(_verify(copy), trail, chain, [(SIGNATURE, None)], {SIGNATURE, NOT_FOUND})


def test_fork_signed_with_the_deployments_own_key(trail: Trail, copy: Settings) -> None:
    """A key holder signs another root at a size already signed (a forked history) and
    anchors it: the rows reproduce the earlier root, so the fork is inconsistent."""
    chain = trail.chains[2]
    origin = trail.origin(chain)
    signer = KeyRing.load(copy.key_dir).signer.renamed(origin)
    fork = sign_checkpoint(
        Checkpoint(origin, CHAIN_ROWS, b"\x07" * 32, (f"time {int(time.time())}",)), [signer]
    )
    DirectoryAnchor(copy.checkpoints_dir).append([(chain[0], chain[1], fork, datetime.now(UTC))])
    assert_caught(_verify(copy), trail, chain, [(INCONSISTENT, None)], {INCONSISTENT, NOT_FOUND})


def test_whole_store_rolled_back_to_an_earlier_copy(trail: Trail, tmp_path: Path) -> None:
    """The store is restored from the copy taken after phase 1; the anchor directory outside it
    still holds the later checkpoints."""
    rolled = copy_trail(trail, trail.early, tmp_path)
    with _store(rolled) as store:
        assert scalar(store, "SELECT count() FROM agentaudit.events") == PHASE1 * BATCH
    result = _verify(rolled)
    assert result.code == 1, str(result)
    for chain in trail.chains:
        assert_caught(
            result, trail, chain, [(MISSING, CHAIN_ROWS)], {MISSING, NOT_FOUND}, others_valid=False
        )
