"""A chain none of whose checkpoints verifies (a forged chain: another tenant's, another
partition; or a new one before its first tick) is judged against its partition's newest sink
checkpoint of another chain, when `agentaudit verify` supplies it (`siblings`)."""

from __future__ import annotations

from agentaudit.trail import verdicts as vd
from tests.unit.trail.chains import BASE, Run, make_rows, summary, verdicts


def test_rows_its_partitions_sink_signed_around_are_extra() -> None:
    rows = make_rows(6)  # ingested at BASE + seq
    rep = Run(rows, []).report(siblings=(BASE + 3, False))
    assert not rep.ok
    assert verdicts(rep) == [
        ("1-6", vd.EXTRA, "seq 1, 2"),
        ("1-6", vd.PENDING, "4 rows"),
    ]
    assert summary(rep) == (0, 0, 0, 2, 4)


def test_after_a_handoff_every_row_of_an_unsigned_chain_is_extra() -> None:
    rows = make_rows(3)
    rep = Run(rows, []).report(siblings=(BASE, True))
    assert verdicts(rep) == [("1-3", vd.EXTRA, "seq 1, 2, 3")]


def test_rows_after_the_partitions_newest_tick_are_pending() -> None:
    rows = make_rows(3)
    for siblings in (None, (BASE, False)):
        rep = Run(rows, []).report(siblings=siblings)
        assert rep.ok and verdicts(rep) == [("1-3", vd.PENDING, "3 rows")]
