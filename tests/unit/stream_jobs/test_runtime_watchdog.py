"""The stall watchdog (`stream_jobs.runtime.watchdog.StallWatch`), on an injected clock: a
partition behind its high watermark with no progress for the bound is reported, once per
bound; progress, catching up, an unknown high watermark, a revoked partition and a reset
each start the count again."""

from __future__ import annotations

from stream_jobs.runtime.watchdog import Stall, StallWatch


def test_a_partition_behind_without_progress_is_reported_once_per_bound() -> None:
    watch = StallWatch(stall_after_s=10.0)
    behind = {0: (250, 500), 1: (500, 500)}  # 1 is caught up
    assert watch.check(100.0, behind) == []  # first seen behind: the count starts
    assert watch.check(109.9, behind) == []
    assert watch.check(110.0, behind) == [Stall(0, 250, 500, 10.0)]
    assert watch.check(111.0, behind) == []  # not again on every tick
    assert watch.check(120.0, behind) == [Stall(0, 250, 500, 10.0)]  # still stuck: again


def test_progress_or_catching_up_restarts_the_count() -> None:
    watch = StallWatch(stall_after_s=10.0)
    assert watch.check(0.0, {0: (250, 500)}) == []
    assert watch.check(9.0, {0: (260, 500)}) == []  # moving: a slow partition, not a stall
    assert watch.check(18.0, {0: (260, 500)}) == []
    assert watch.check(19.0, {0: (260, 500)}) == [Stall(0, 260, 500, 10.0)]
    assert watch.check(20.0, {0: (500, 500)}) == []  # caught up
    assert watch.check(25.0, {0: (500, 600)}) == []  # new records: counted from now
    assert watch.check(34.0, {0: (500, 600)}) == []
    assert watch.check(35.0, {0: (500, 600)}) == [Stall(0, 500, 600, 10.0)]


def test_unknown_high_watermarks_revoked_partitions_and_resets_are_not_stalls() -> None:
    watch = StallWatch(stall_after_s=10.0)
    assert watch.check(0.0, {0: (0, None), 1: (5, 9)}) == []
    assert watch.check(30.0, {0: (0, None)}) == []  # never known; 1 was revoked
    assert watch.check(31.0, {0: (0, None), 1: (5, 9)}) == []  # 1 back: counted afresh
    watch.reset()  # a rebalance, or the agent holding its first batch
    assert watch.check(40.0, {1: (5, 9)}) == []
    assert watch.check(50.0, {1: (5, 9)}) == [Stall(1, 5, 9, 10.0)]
