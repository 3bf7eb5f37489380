"""The stream jobs' counters reach the worker's /metrics and agree with what the jobs did.

The jobs run in their own process; their counters (events, invalid, duplicates, failed per
job) were only in that process's memory: on-call could not see a job failing on events.
"""

from __future__ import annotations

import asyncio
import io
import logging
from typing import Any

import pytest
from rich.console import Console

from agentaudit.broker import ensure_topics, free_port
from agentaudit.health.jobs_counters import JobsCounters
from agentaudit.jobs_process import REPORT_KEY
from agentaudit.services import serve_worker
from agentaudit.settings import Settings
from tests.factories import event_dict, wire
from tests.faults.conftest import FULL
from tests.helpers_wait import poll_until
from tests.integration.helpers import produce_raw
from tests.integration.test_metrics import _scrape

pytestmark = [
    pytest.mark.integration,
    pytest.mark.faults,
    pytest.mark.skipif(not FULL, reason="~15 s, a worker and its jobs: ./run faults"),
]  # the report parsing: unit tests, in CI
VALID, RESENT, JUNK = 30, 7, [b"{not json", b'{"tenant_id": "acme"}', b"[1, 2]"]


def _diagnosis(
    settings: Settings,
    seen: dict[Any, float],
    reports: list[dict[str, Any]],
    caplog: pytest.LogCaptureFixture,
    console: io.StringIO,
) -> str:
    """Why the counters disagree: what /metrics said, which jobs processes reported what (a
    restart shows as a second pid), the supervisor's log lines (exits, restarts) and the
    worker's console. The jobs process's own log goes to stderr (captured by pytest)."""
    last: dict[Any, tuple[int, dict[str, Any]]] = {}
    for report in reports:
        n, _ = last.get(report.get("pid"), (0, {}))
        last[report.get("pid")] = (n + 1, report[REPORT_KEY])
    supervisor = [r.getMessage() for r in caplog.records if r.name.startswith("agentaudit.jobs")]
    metrics = {k[0]: v for k, v in seen.items() if "stream_jobs" in k[0] and k[0].endswith("total")}
    return (
        f"{metrics}\njobs group {settings.jobs_group!r}; reports per jobs pid "
        f"(count, last counters): {last}\nsupervisor: {supervisor}\n"
        f"worker console:\n{console.getvalue()}"
    )


async def test_the_jobs_counters_on_metrics_agree_with_what_they_were_fed(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    reports: list[dict[str, Any]] = []
    observe = JobsCounters.observe

    def record(self: JobsCounters, report: dict[str, Any]) -> None:
        reports.append(report)  # for the diagnosis; counted as ever
        observe(self, report)

    monkeypatch.setattr(JobsCounters, "observe", record)
    caplog.set_level(logging.INFO, "agentaudit.jobs")
    port = free_port()
    settings = settings.model_copy(
        update={"metrics_port": port, "stream_jobs": True, "metrics_refresh_s": 0.2}
    )
    docs = [wire(event_dict("acme")) for _ in range(VALID)]
    messages = [(b"acme", d) for d in docs] + [(b"acme", d) for d in docs[:RESENT]]
    messages += [(b"acme", j) for j in JUNK]
    await ensure_topics(settings)
    stop = asyncio.Event()
    console = io.StringIO()
    worker = asyncio.create_task(serve_worker(settings, stop, Console(file=console, width=300)))
    expected = {
        ("agentaudit_stream_jobs_events_total", ()): VALID,
        ("agentaudit_stream_jobs_duplicates_total", ()): RESENT,
        ("agentaudit_stream_jobs_invalid_total", ()): len(JUNK),
    }
    seen: dict[Any, float] = {}

    async def agrees() -> bool:
        try:
            seen.update(await asyncio.to_thread(_scrape, port))
        except OSError:  # not serving yet
            return False
        return all(seen.get(k) == v for k, v in expected.items())

    try:
        await produce_raw(settings, messages)
        await poll_until(
            agrees,
            90,
            "the jobs' counters on /metrics",
            interval=0.2,
            check=lambda: worker.done() and worker.result(),
            detail=lambda: _diagnosis(settings, seen, reports, caplog, console),
        )
    finally:
        stop.set()
        await worker
    assert not [k for k in seen if k[0] == "agentaudit_stream_jobs_failed_total"]
