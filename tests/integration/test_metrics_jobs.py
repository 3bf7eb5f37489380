"""The stream jobs' counters reach the worker's /metrics and agree with what the jobs did.

The jobs run in their own process; their counters (events, invalid, duplicates, failed per
job) were only in that process's memory: on-call could not see a job failing on events.
"""

from __future__ import annotations

import asyncio
import io
from typing import Any

import pytest
from rich.console import Console

from agentaudit.broker import ensure_topics, free_port
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


async def test_the_jobs_counters_on_metrics_agree_with_what_they_were_fed(
    settings: Settings,
) -> None:
    port = free_port()
    settings = settings.model_copy(
        update={"metrics_port": port, "stream_jobs": True, "metrics_refresh_s": 0.2}
    )
    docs = [wire(event_dict("acme")) for _ in range(VALID)]
    messages = [(b"acme", d) for d in docs] + [(b"acme", d) for d in docs[:RESENT]]
    messages += [(b"acme", j) for j in JUNK]
    await ensure_topics(settings)
    stop = asyncio.Event()
    worker = asyncio.create_task(
        serve_worker(settings, stop, Console(file=io.StringIO(), width=300))
    )
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
            detail=lambda: repr({k: v for k, v in seen.items() if "stream_jobs" in k[0]}),
        )
    finally:
        stop.set()
        await worker
    assert not [k for k in seen if k[0] == "agentaudit_stream_jobs_failed_total"]
