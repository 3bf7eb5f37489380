"""The tail check's counters reach /metrics from a sink process too (`sink_processes > 1`).

They were counted in the registry of the process that ran the check; /metrics is served by the
worker, the parent of its sink processes: a chain refused there was logged (CRITICAL) but its
counter never moved on /metrics. A sink process now puts the counts on its report line.
"""

from __future__ import annotations

import asyncio
import io
import sys
from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY

from agentaudit.health.metrics import WorkerMetrics
from agentaudit.settings import Settings
from agentaudit.sink import child, tailread


def _served() -> dict[str, float]:
    """The tail counters of the default registry (served on /metrics with the worker's)."""
    refused = "agentaudit_trail_tail_chains_refused_total"
    return {
        "checked": REGISTRY.get_sample_value("agentaudit_trail_tail_rows_checked_total") or 0.0,
        "forged": REGISTRY.get_sample_value(refused, {"verdict": "forged"}) or 0.0,
        "unreadable": REGISTRY.get_sample_value(refused, {"verdict": "unreadable"}) or 0.0,
    }


def _grew(before: dict[str, float]) -> dict[str, float]:
    return {k: v - before[k] for k, v in _served().items() if v != before[k]}


def test_a_sink_process_reports_its_tail_checks_once_and_the_worker_counts_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    tailread.take_tail_counts()  # whatever earlier tests in this process counted
    before = _served()
    tailread.record_tail_checks({"checked": 7, "forged": 1})  # what check_tails does
    assert _grew(before) == {"checked": 7, "forged": 1}  # this process's own counters

    # The sink process's reporter: one line with what grew, then nothing more to say.
    out = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(out))
    monkeypatch.setattr(child, "TAIL_REPORT_S", 0.01)

    async def report_a_while() -> None:
        task = asyncio.create_task(child._report_tail_checks())  # noqa: SLF001 (its loop)

        async def first_line() -> None:
            while not out.getvalue():
                await asyncio.sleep(0.01)

        await asyncio.wait_for(first_line(), 10)
        for _ in range(5):  # more periods: nothing new, no more lines
            await asyncio.sleep(0.01)
        task.cancel()

    asyncio.run(report_a_while())
    lines = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert lines == [{"tail_checks": {"checked": 7, "forged": 1}}]

    # The worker (parent) adds the line's counts to the served counters.
    before = _served()
    WorkerMetrics(Settings(data_dir=tmp_path)).observe_report(lines[0])
    assert _grew(before) == {"checked": 7, "forged": 1}
    WorkerMetrics(Settings(data_dir=tmp_path)).observe_report({"tail_checks": {"unreadable": 2}})
    assert _grew(before) == {"checked": 7, "forged": 1, "unreadable": 2}
