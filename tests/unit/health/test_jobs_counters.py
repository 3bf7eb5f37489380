"""The jobs process's report lines become /metrics counters (`agentaudit.health.jobs_counters`)."""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from agentaudit.health.jobs_counters import JobsCounters
from agentaudit.jobs_process import REPORT_KEY, read_reports
from stream_jobs.jobs import JobCounters


def _report(pid: int, **counters: Any) -> dict[str, Any]:
    base = JobCounters().report()
    return {REPORT_KEY: {**base, **counters}, "pid": pid}


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels or None)


def test_reports_add_what_grew_and_a_restarted_process_adds_its_own() -> None:
    registry = CollectorRegistry()
    counters = JobsCounters(registry)
    counters.observe(_report(10, events=5, invalid=2, failed={"spend": 1}))
    counters.observe(_report(10, events=9, invalid=2, duplicates=3, failed={"spend": 2}))
    counters.observe(
        _report(10, events=9, invalid=2, duplicates=3, failed={"spend": 2}, late={"spend": 2})
    )
    counters.observe(_report(11, events=4, failed_ticks={"detection": 1}))  # restarted
    counters.observe(
        _report(11, events=4, failed_ticks={"detection": 1}, late={"spend": 1, "drift": 1})
    )
    assert _value(registry, "agentaudit_stream_jobs_events_total") == 13
    assert _value(registry, "agentaudit_stream_jobs_invalid_total") == 2
    assert _value(registry, "agentaudit_stream_jobs_duplicates_total") == 3
    assert _value(registry, "agentaudit_stream_jobs_failed_total", job="spend") == 2
    assert _value(registry, "agentaudit_stream_jobs_failed_ticks_total", job="detection") == 1
    assert _value(registry, "agentaudit_stream_jobs_late_total", job="spend") == 3
    assert _value(registry, "agentaudit_stream_jobs_late_total", job="drift") == 1
    assert b"agentaudit_stream_jobs_failed_total" in generate_latest(registry)


def test_report_lines_are_read_and_other_lines_skipped() -> None:
    seen: list[dict[str, Any]] = []

    async def read() -> None:
        stdout = asyncio.StreamReader()
        report = JobCounters(events=3).report()
        stdout.feed_data(b"stream jobs consuming events; Ctrl-C stops\n")
        stdout.feed_data(b'{"jobs_counters": ' + repr(report).replace("'", '"').encode())
        stdout.feed_data(b', "pid": 7}\n{broken\n[1]\n')
        stdout.feed_eof()
        await read_reports(stdout, seen.append)

    asyncio.run(read())
    assert seen == [{REPORT_KEY: JobCounters(events=3).report(), "pid": 7}]
