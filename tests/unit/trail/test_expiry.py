"""`expired by policy` (issue 11 D): a chain prefix gone by retention, and what stays missing.

The claim comes from a ``retention_applied`` event (`vd.Expiry`); the verifier accepts it only
at a valid checkpoint old enough for the policy, below every held subject's first row, with a
frontier that reproduces the checkpoint's root. Built on test_audit's signed synthetic chains.
"""

from __future__ import annotations

from agentaudit.trail import verdicts as vd
from tests.unit.trail.chains import BASE, Run, make_rows, note, verdicts

DAYS = 30
FULL = make_rows(9)
NOTES = [note(FULL, 3), note(FULL, 6), note(FULL, 9)]  # signed at BASE + size
OLD_ENOUGH = BASE + 6 + DAYS * vd.DAY  # the earliest a sweep may cut at size 6


def _report(rows: list[vd.Row], *claims: vd.Expiry, frontiers: bool = True) -> vd.ChainReport:
    run = Run(rows, list(NOTES), frontiers=frontiers)
    run.rows_orig = FULL  # the stored frontiers are the true tree's
    return run.report(expiry=claims)


def test_prefix_cut_at_a_justified_horizon_is_expired_and_the_rest_still_checked() -> None:
    rep = _report(FULL[6:], vd.Expiry(6, DAYS, OLD_ENOUGH))
    v = verdicts(rep)
    why = f"retention {DAYS} days, applied {vd.iso(OLD_ENOUGH)}"
    assert ("1-3", vd.EXPIRED, f"seq 1-3; {why}") in v
    assert ("4-6", vd.EXPIRED, f"seq 4-6; {why}") in v
    assert ("7-9", vd.VALID, "") in v
    assert rep.ok and rep.expired == 6 and (rep.rows_valid, rep.rows) == (3, 3)
    assert vd.summary([rep]) == (
        "3/3 checkpoints valid, 3/3 rows valid, 6 rows expired by policy",
        True,
    )


def test_no_retention_event_leaves_a_deleted_prefix_missing() -> None:
    v = verdicts(_report(FULL[6:]))
    assert ("1-3", vd.MISSING, "seq 1-3") in v and ("4-6", vd.MISSING, "seq 4-6") in v


def test_rows_deleted_past_the_horizon_are_missing() -> None:
    v = verdicts(_report(FULL[6:], vd.Expiry(3, DAYS, OLD_ENOUGH)))
    assert ("1-3", vd.EXPIRED, f"seq 1-3; retention {DAYS} days, applied {vd.iso(OLD_ENOUGH)}") in v
    assert ("4-6", vd.MISSING, "seq 4-6") in v


def test_a_sweep_earlier_than_the_policy_allows_does_not_explain_the_gap() -> None:
    v = verdicts(_report(FULL[6:], vd.Expiry(6, DAYS, OLD_ENOUGH - 1)))
    assert ("4-6", vd.MISSING, "seq 4-6") in v and all(x[1] != vd.EXPIRED for x in v)


def test_a_horizon_at_or_past_a_held_subjects_first_row_is_not_justified() -> None:
    v = verdicts(_report(FULL[6:], vd.Expiry(6, DAYS, OLD_ENOUGH, floor=5)))
    assert ("4-6", vd.MISSING, "seq 4-6") in v and all(x[1] != vd.EXPIRED for x in v)
    ok = verdicts(_report(FULL[6:], vd.Expiry(6, DAYS, OLD_ENOUGH, floor=7)))
    assert (
        "4-6",
        vd.EXPIRED,
        f"seq 4-6; retention {DAYS} days, applied {vd.iso(OLD_ENOUGH)}",
    ) in ok


def test_without_a_frontier_reproducing_the_horizon_root_the_prefix_is_missing() -> None:
    v = verdicts(_report(FULL[6:], vd.Expiry(6, DAYS, OLD_ENOUGH), frontiers=False))
    assert ("4-6", vd.MISSING, "seq 4-6") in v and all(x[1] != vd.EXPIRED for x in v)


def test_a_horizon_that_is_no_checkpoint_size_is_not_justified() -> None:
    v = verdicts(_report(FULL[5:], vd.Expiry(5, DAYS, OLD_ENOUGH)))
    assert ("4-6", vd.MISSING, "seq 4-5") in v and all(x[1] != vd.EXPIRED for x in v)


def test_a_claim_over_rows_still_there_changes_nothing() -> None:
    rep = _report(FULL, vd.Expiry(6, DAYS, OLD_ENOUGH))
    assert rep.ok and rep.expired == 0 and (rep.rows_valid, rep.rows) == (9, 9)
    assert all(x[1] == vd.VALID for x in verdicts(rep))
