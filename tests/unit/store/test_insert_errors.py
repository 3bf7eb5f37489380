"""Which errors counted in `system.errors` during an insert are the insert's own
(`agentaudit.store.chdb_engine.insert_errors`): chDB's insert swallows some errors, and a read
running beside it on a read lane counts its errors in the same table."""

from __future__ import annotations

from agentaudit.store.chdb_engine import READ_SIDE_CODES, ErrorCounts, insert_errors

THROW = 395  # throwIf: what a view of the insert raises
LOADING_MARKS_CANCELED = 696


def _counts(code: int, times: int, by: str) -> ErrorCounts:
    return {code: (times, "NAME", "message", True, by)}


def test_a_read_cut_while_loading_marks_beside_the_insert_is_not_the_insert_s_failure() -> None:
    """Seen in CI under load: a read cut beside an insert counted ASYNC_LOAD_CANCELED three
    times (once per part), and the insert was blamed; the demo's record sink stopped."""
    assert LOADING_MARKS_CANCELED in READ_SIDE_CODES
    grown = _counts(LOADING_MARKS_CANCELED, 3, "a-read")
    assert insert_errors({}, grown, "the-insert", overlapped=True) == []


def test_what_may_be_the_insert_s_failure_is_still_blamed_on_it() -> None:
    # the insert raised it last
    assert insert_errors({}, _counts(LOADING_MARKS_CANCELED, 3, "the-insert"), "the-insert", True)
    # no read beside it
    assert insert_errors({}, _counts(LOADING_MARKS_CANCELED, 1, "a-read"), "the-insert", False)
    # the insert's own id unknown
    assert insert_errors({}, _counts(LOADING_MARKS_CANCELED, 3, "a-read"), None, True)
    # an error a view of the insert can raise, counted twice: maybe once by the insert
    assert insert_errors({}, _counts(THROW, 2, "a-read"), "the-insert", True) == [
        (THROW, "NAME", "message")
    ]
    # counted once, last raised by the read: the read's
    assert insert_errors({}, _counts(THROW, 1, "a-read"), "the-insert", True) == []


def test_only_what_grew_during_the_insert_counts() -> None:
    before = _counts(THROW, 4, "earlier")
    assert insert_errors(before, _counts(THROW, 4, "earlier"), "the-insert", False) == []
    background = {THROW: (5, "NAME", "merge", False, "")}  # not raised by a query
    assert insert_errors(before, background, "the-insert", False) == []
