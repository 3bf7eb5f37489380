"""Stream jobs shared by two workers, on the real broker (issue #3): a rebalance hands half of
the partitions over through the changelog, and the outcome must equal one uninterrupted run
(the checks of `test_stream_jobs_faults`, from `jobs_workers`).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agentaudit.broker import ensure_topics
from agentaudit.control_plane import publish_budgets
from agentaudit.settings import Settings
from agentaudit_schemas.budgets import BudgetScope
from tests.integration.jobs_workers import (
    Done,
    JobsProcess,
    check_positions_never_go_back,
    check_spend,
    check_store,
    six,
    spend_states,
    until,
)
from tests.integration.jobs_workload import (
    PARTITIONS,
    expected_records,
    last_positions,
    produce,
    shifted_now,
    workload,
)

pytestmark = pytest.mark.integration


@pytest.mark.faults
@pytest.mark.skipif(
    os.environ.get("FAULT_MATRIX") != "full",
    reason="40 s: runs in `./run faults` (FAULT_MATRIX=full); it stalled about 1 run in 4 before "
    "the jobs' fence asked again for lost seeks (stream_jobs/delivery.py), 0 in 19 runs after",
)
async def test_two_workers_share_the_partitions_and_agree_with_one(
    settings: Settings, tmp_path: Path
) -> None:
    """Worker A takes the first half alone; B joins (the rebalance hands half of A's
    partitions over through the changelog); the second half is split between them; then
    every tenant budget is raised at run time, which each worker applies to the tenants it
    holds: a worker must not write what it still remembers of a tenant it no longer owns.

    After the rebalance, A's consumer skips ahead once in a partition it kept (the fault
    faust's consumer showed in about one run in ten: events after a hole were delivered and
    the hole's events, delivered later, were skipped as replays; spend lost, thresholds
    missed). The jobs must notice the hole, seek back and apply every event once."""
    settings, app_id = six(settings)
    budgets, first_half, second_half = workload(shifted_now())
    raised = [
        b.model_copy(update={"limit_usd": 2 * (b.limit_usd or 0)})
        for b in budgets
        if b.scope is BudgetScope.TENANT
    ]
    await ensure_topics(settings)
    await publish_budgets(settings, budgets)
    a = JobsProcess(settings, app_id, tmp_path / "jobs-a.log", fault="skip_ahead_after_rebalance")
    b: JobsProcess | None = None
    try:
        first = await produce(settings, first_half)
        alone = Done(settings, app_id, expected_records(budgets, first), last_positions(first))
        await until("A's first half", alone, [a])
        b = JobsProcess(settings, app_id, tmp_path / "jobs-b.log")

        async def split() -> bool:
            got_a, got_b = a.assignments(), b.assignments() if b else []
            return bool(
                got_a
                and got_b
                and got_a[-1]
                and got_b[-1]
                and sorted(got_a[-1] + got_b[-1]) == list(range(PARTITIONS))
            )

        await until("both workers assigned", split, [a, b])
        placed = first + await produce(settings, second_half)
        last = last_positions(placed)
        shared = Done(settings, app_id, expected_records(budgets, placed), last)
        await until("all records and spend", shared, [a, b])
        await publish_budgets(settings, raised)
        want = expected_records(budgets, placed, raised)
        await until(
            "the raised budgets applied", Done(settings, app_id, want, last, raised), [a, b]
        )
        assignment = (a.assignments()[-1], b.assignments()[-1])
        skipped = [line for line in a.output().splitlines() if line.startswith("SKIPPED")]
    finally:
        for w in (a, b):
            if w is not None:
                w.stop()

    await check_positions_never_go_back(settings, app_id)
    check_spend(await spend_states(settings, app_id), placed)
    republished = await check_store(settings, want)
    assert skipped, "A's consumer was meant to skip ahead once after the rebalance"
    print(
        f"\nA owned partitions {assignment[0]}, B {assignment[1]}; A {skipped[0].lower()}; "
        f"{len(republished)} ids published more than once"
    )
