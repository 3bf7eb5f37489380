"""Store mode's chunk of rows (agentaudit.verify.store._chunk_rows): the engine's columns
become rows and runs as `ChainAudit` expects them (one row, then a run, per checked block)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from agentaudit.trail.verdicts import Run
from agentaudit.verify.store import _chunk_rows


def _columns(whole: list[bool]) -> list[list[Any]]:
    """Columns of `_ROWS_SQL` for rows seq 1.. where ``whole[i]`` says the row came whole."""
    n = len(whole)
    seq = list(range(1, n + 1))
    body = [b'{"n":%d}' % s if w else None for s, w in zip(seq, whole, strict=True)]
    cost = ["0.000001500" if w else "" for w in whole]
    return [
        seq,
        [True] * n,
        [not w for w in whole],
        list(whole),
        body,
        cost,
        [True] * n,
        ["v1"] * n,
        [f"{s - 1:064x}" for s in seq],
        [f"{s:064x}" for s in seq],
        [f"{s + 100:064x}" for s in seq],
        [1000.0 + s for s in seq],
    ]


def test_each_block_of_engine_checked_rows_is_a_row_then_a_run() -> None:
    whole = [True, False, False, False, False, True, False, False, False, True, False]
    out = _chunk_rows(_columns(whole))
    kinds = [
        ("run", r.first, r.last) if isinstance(r, Run) else ("row", r[0], r[1] is None) for r in out
    ]
    assert kinds == [
        ("row", 1, False),
        ("row", 2, True),
        ("run", 3, 5),
        ("row", 6, False),
        ("row", 7, True),
        ("run", 8, 9),
        ("row", 10, False),
        ("row", 11, True),
    ]
    run = out[2]
    assert isinstance(run, Run)
    assert run.leaves == [bytes.fromhex(f"{s + 100:064x}") for s in (3, 4, 5)]
    assert list(run.ingested) == [1003.0, 1004.0, 1005.0] and run.row_hash == f"{5:064x}"
    first = out[0]
    assert not isinstance(first, Run)
    assert first[1] == b'{"n":1}' and first[2] == Decimal("0.000001500") and first[6] == f"{1:064x}"
    head = out[1]
    assert not isinstance(head, Run) and head[2] is None and head[7] == f"{102:064x}"


def test_a_chunk_of_whole_rows_is_rows_only() -> None:
    out = _chunk_rows(_columns([True, True, True]))
    assert [r[0] for r in out if not isinstance(r, Run)] == [1, 2, 3] and len(out) == 3
