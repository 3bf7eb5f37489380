"""Verify while a sink takes a handed-off chain over: the new owner signs a takeover checkpoint
before it stores, but one signed after the verifier read the chain's checkpoints is not among
them. A row stored while the verifier ran is then pending, not extra (before: `extra rows`,
exit 1, during any rebalance); a row dated before the run or past now stays extra."""

from __future__ import annotations

from agentaudit.trail import verdicts as vd
from tests.unit.trail.chains import BASE, Run, make_rows, note, verdicts

ROWS = make_rows(5)


def _tail(ingested: float, started: float) -> tuple[str, str, str]:
    later = (*ROWS[4][:8], ingested, *ROWS[4][9:])
    run = Run([*ROWS[:4], later], [note(ROWS, 4, handoff=True)], started_at=started)
    return verdicts(run.report(clock=lambda: BASE + 12.0))[-1]


def test_a_row_stored_while_the_verifier_ran_is_pending() -> None:
    assert _tail(BASE + 10.0, started=BASE + 8.0) == ("5-5", vd.PENDING, "1 rows")


def test_a_row_stored_before_the_run_or_dated_past_now_is_extra() -> None:
    assert _tail(BASE + 10.0, started=BASE + 11.5) == ("5-5", vd.EXTRA, "seq 5")
    assert _tail(BASE + 10_000.0, started=BASE + 8.0) == ("5-5", vd.EXTRA, "seq 5")
