"""`split_take`: a take of polled batches is applied in runs of at most N records, in order
(the broker case: tests/integration/test_stream_jobs_lock_holds.py, behind faults)."""

from __future__ import annotations

from types import SimpleNamespace

from stream_jobs.runtime.stream import split_take


def _polls(*sizes: int) -> list[SimpleNamespace]:
    out, offset = [], 0
    for n in sizes:
        out.append(SimpleNamespace(value=[(o, b"") for o in range(offset, offset + n)]))
        offset += n
    return out


def test_runs_hold_at_most_max_items_and_keep_the_order() -> None:
    polls = _polls(3000, 3000, 1000, 5000, 7000, 10)
    runs = split_take(polls, 5000)
    assert [[len(p.value) for p in run] for run in runs] == [
        [3000],
        [3000, 1000],
        [5000],
        [7000],
        [10],
    ]
    assert [p for run in runs for p in run] == polls  # nothing lost, nothing reordered


def test_a_small_take_is_one_run() -> None:
    polls = _polls(10, 20)
    assert split_take(polls, 5000) == [polls]
    assert split_take([], 5000) == []
