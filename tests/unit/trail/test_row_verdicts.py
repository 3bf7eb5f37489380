"""The chain verifier's row verdicts: row hash, missing, extra, reordered, derived values.

Every mutation is applied to the rows the way a store owner or a forger could (see
`tests.unit.trail.chains`), and the verdict lines are compared.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from agentaudit.trail import verdicts as vd
from tests.unit.trail.chains import (
    BASE,
    Run,
    make_rows,
    note,
    relink,
    summary,
    verdicts,
)

# ---- row verdicts --------------------------------------------------------------------------


def test_payload_edited_in_place_is_a_row_hash_failure_at_that_row() -> None:
    rows = make_rows(8)
    r = rows[4]
    rows[4] = (r[0], r[1].replace(b"5", b"7"), *r[2:])
    rep = Run(rows, [note(rows, 4), note(rows, 8)]).report()
    assert ("5-8", vd.ROW_HASH, "seq 5") in verdicts(rep)
    assert summary(rep) == (2, 2, 7, 8, 0)


def test_payload_edited_with_every_hash_recomputed_fails_the_range_root() -> None:
    rows = make_rows(8)
    r = rows[5]
    rows[5] = (r[0], r[1].replace(b"6", b"9"), *r[2:])
    relink(rows, 5)
    rep = Run(rows, [note(rows[:0] + make_rows(8), 4), note(make_rows(8), 8)]).report()
    v = verdicts(rep)
    assert ("1-4", vd.VALID, "") in v
    assert ("5-8", vd.ROW_HASH, "the rows do not reproduce the checkpoint's root") in v
    assert summary(rep) == (2, 2, 4, 8, 0)


def test_changed_cost_with_stale_leaf_hash_is_a_row_hash_failure() -> None:
    rows = make_rows(4)
    r = rows[0]
    rows[0] = (r[0], r[1], Decimal(0), *r[3:])
    rep = Run(rows, [note(make_rows(4), 4)]).report()
    assert ("1-4", vd.ROW_HASH, "seq 1") in verdicts(rep)


def test_broken_link_blames_the_row_after_the_rewritten_one() -> None:
    fixed = make_rows(6)
    rows = list(fixed)
    r = rows[2]
    rows[2] = (r[0], r[1].replace(b"3", b"4"), *r[2:])
    relink(rows, 2)  # row 3's leaf and row hash recomputed ...
    rows = rows[:3] + fixed[3:]  # ... but row 4 still links to the old row 3
    rep = Run(rows, [note(fixed, 6)]).report()
    assert verdicts(rep)[1:] == [("1-6", vd.ROW_HASH, "seq 4")]


def test_middle_row_deleted_is_missing_and_later_ranges_unverifiable_without_frontier() -> None:
    full = make_rows(9)
    rows = full[:4] + full[5:]
    rep = Run(rows, [note(full, 3), note(full, 6), note(full, 9)]).report()
    v = verdicts(rep)
    assert ("1-3", vd.VALID, "") in v
    assert ("4-6", vd.MISSING, "seq 5") in v
    assert (
        "7-9",
        vd.MISSING,
        "cannot be checked against its checkpoint: earlier rows are missing",
    ) in v
    assert summary(rep) == (3, 3, 3, 9, 0)


def test_a_verified_frontier_lets_later_ranges_be_checked_after_a_gap() -> None:
    full = make_rows(9)
    run = Run(full[:4] + full[5:], [note(full, 3), note(full, 6), note(full, 9)], frontiers=True)
    run.rows_orig = full
    v = verdicts(run.report())
    assert ("4-6", vd.MISSING, "seq 5") in v and ("7-9", vd.VALID, "") in v


def test_a_frontier_that_does_not_reproduce_its_root_is_not_used() -> None:
    full = make_rows(9)
    run = Run(full[:4] + full[5:], [note(full, 3), note(full, 6), note(full, 9)], frontiers=True)
    run.rows_orig = make_rows(9, tenant="other")  # wrong frontiers
    assert ("7-9", vd.VALID, "") not in verdicts(run.report())


def test_tail_deleted_or_store_rolled_back_is_missing_rows() -> None:
    full = make_rows(10)
    rep = Run(full[:7], [note(full, 5), note(full, 10)]).report()
    v = verdicts(rep)
    assert ("1-5", vd.VALID, "") in v and ("6-10", vd.MISSING, "seq 8-10") in v
    assert summary(rep) == (2, 2, 5, 10, 0)  # rows 6-7 are there but no root proves them


def test_duplicate_chain_seq_is_an_extra_row_and_the_linking_one_is_kept() -> None:
    rows = make_rows(5)
    forged = (3, b'{"n":99}', *rows[2][2:])
    for dup in ([*rows[:2], forged, *rows[2:]], [*rows[:3], forged, *rows[3:]]):
        rep = Run(dup, [note(rows, 5)]).report()
        assert verdicts(rep) == [("size 5", vd.VALID, ""), ("1-5", vd.EXTRA, "seq 3")], dup
        assert summary(rep) == (1, 1, 5, 6, 0)


def test_forged_row_appended_before_the_last_checkpoint_was_signed_is_extra() -> None:
    rows = make_rows(5)
    nxt = make_rows(6)[5]
    forged = (*nxt[:8], float(BASE + 2), True, "")  # backdated ingested_at
    rep = Run([*rows, forged], [note(rows, 5, t=BASE + 30)]).report()
    assert ("6-6", vd.EXTRA, "seq 6") in verdicts(rep)
    assert not rep.ok and summary(rep) == (1, 1, 5, 6, 0)


def test_rows_after_a_newest_handoff_checkpoint_are_extra_even_if_ingested_later() -> None:
    # A sink signs `handoff` after its last insert, and one taking the chain over signs before
    # it stores: a row after a newest handoff was written by no sink, whatever its ingested_at.
    rows = make_rows(5)
    later = (*rows[4][:8], BASE + 10_000.0, *rows[4][9:])
    rep = Run([*rows[:4], later], [note(rows, 4, handoff=True)]).report()
    assert ("5-5", vd.EXTRA, "seq 5") in verdicts(rep) and not rep.ok
    taken_over = Run([*rows[:4], later], [note(rows, 4, handoff=True), note(rows, 4, t=BASE + 20)])
    assert verdicts(taken_over.report())[-1] == ("5-5", vd.PENDING, "1 rows")


def test_a_handoff_signed_in_the_same_second_as_the_tick_before_it_still_seals() -> None:
    # The sink's last tick and its handoff share size and second: the order they were
    # signed in (the order the sources list them) decides which is the newest.
    rows = make_rows(5)
    later = (*rows[4][:8], BASE + 10_000.0, *rows[4][9:])
    notes = [note(rows, 4, t=BASE + 9), note(rows, 4, t=BASE + 9, handoff=True)]
    assert ("5-5", vd.EXTRA, "seq 5") in verdicts(Run([*rows[:4], later], notes).report())
    takeover = [*notes, note(rows, 4, t=BASE + 9)]  # a sink took it over, same second
    assert verdicts(Run([*rows[:4], later], takeover).report())[-1][1] == vd.PENDING


def test_rows_after_an_end_checkpoint_are_extra() -> None:
    rows = make_rows(6)
    later = tuple((*r[:8], BASE + 10_000.0, *r[9:]) for r in rows[4:])
    rep = Run([*rows[:4], *later], [note(rows, 4, end=True)]).report()
    assert ("5-6", vd.EXTRA, "seq 5, 6") in verdicts(rep)
    assert "end" in rep.lines[0].text


def test_growth_after_an_end_is_inconsistent() -> None:
    rows = make_rows(6)
    rep = Run(rows, [note(rows, 4, end=True), note(rows, 6, t=BASE + 100)]).report()
    assert ("size 6", vd.INCONSISTENT, "size 6 signed after the chain's end at size 4") in verdicts(
        rep
    )


def _swap(rows: list[vd.Row], i: int, j: int) -> list[vd.Row]:
    out = list(rows)
    ri, rj = out[i], out[j]
    out[i], out[j] = (ri[0], *rj[1:]), (rj[0], *ri[1:])
    return sorted(out, key=lambda r: r[0])


@pytest.mark.parametrize(("i", "j"), [(4, 5), (1, 14), (0, 15)])
def test_rows_swapped_are_reordered_not_row_hash(i: int, j: int) -> None:
    rows = make_rows(16)
    rep = Run(_swap(rows, i, j), [note(rows, 16)]).report()
    assert verdicts(rep)[1:] == [("1-16", vd.REORDERED, f"seq {i + 1}, {j + 1}")]
    assert summary(rep) == (1, 1, 14, 16, 0)


def test_reordered_without_stored_leaf_hashes_uses_the_chain_links() -> None:
    rows = [(*r[:7], "", *r[8:]) for r in make_rows(8)]  # rows stored before migration 0013
    swapped = _swap(rows, 2, 3)
    rep = Run(swapped, [note(make_rows(8), 8)]).report()
    assert ("1-8", vd.REORDERED, "seq 3, 4") in verdicts(rep)


def test_derived_value_disagreement_is_reported_per_column() -> None:
    rows = make_rows(4)
    rows[1] = (*rows[1][:10], "user_id")
    rows[2] = (*rows[2][:10], "cost_usd")
    rep = Run(rows, [note(rows, 4)]).report()
    v = verdicts(rep)
    assert ("1-4", f"{vd.DERIVED}: cost_usd", "seq 3") in v
    assert ("1-4", f"{vd.DERIVED}: user_id", "seq 2") in v
    assert not rep.ok and summary(rep)[2:4] == (2, 4)
