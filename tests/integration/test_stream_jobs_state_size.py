"""A table value too large for one changelog message is skipped with an ERROR; before, the
producer's send buffer refused it and crashed the jobs app, and the restarted jobs rebuilt
the same value from the same events: a crash loop of the whole worker."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

import pytest

from agentaudit.broker import ensure_topics
from agentaudit.settings import Settings
from stream_jobs.app import StreamJobsApp
from stream_jobs.drift import GoldSetRegistry, make_pin, parse_goldset
from stream_jobs.runtime import running
from tests.factories import event_dict, wire
from tests.helpers_wait import poll_until
from tests.integration.helpers import produce_raw

pytestmark = [pytest.mark.integration, pytest.mark.faults]

MAX_REQUEST = 60_000
"""The producer's request limit for this test (1 MB by default): 4,000 eval scores of one
open window make a drift value of ~76 kB (60,000 made 1.1 MB against the default)."""


@pytest.mark.timeout(90)  # without the guard the crashed app's shutdown hangs
async def test_an_oversized_drift_state_is_skipped_and_the_jobs_go_on(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="agentaudit.stream_jobs")
    await ensure_topics(settings)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    cases = [f"c-{i}" for i in range(4000)]
    text = "\n".join(json.dumps({"case_id": c}) for c in cases)
    version, _ = GoldSetRegistry().add(parse_goldset("gs", text), now)
    results = [(c, 0.123456789 + i * 1e-7, True) for i, c in enumerate(cases)]
    pin = make_pin("acme", version, "m", "1.0.0", "", results, now)
    messages = []
    for i, case in enumerate(cases):
        doc = event_dict("acme", "llm_call")
        doc["type"], doc["occurred_at"] = (
            "eval_result",
            (now + timedelta(milliseconds=i)).isoformat(),
        )
        score = 0.987654321 - i * 1e-7
        payload = {"gold_set_id": "gs", "case_id": case, "metric": "m", "score": score}
        doc["payload"] = {**payload, "passed": True, "evaluator": "e"}
        messages.append((b"acme", wire(doc)))
    after = event_dict("globex", "llm_call")
    after["occurred_at"] = now.isoformat()
    messages.append((b"globex", wire(after)))
    jobs = StreamJobsApp(
        settings,
        app_id=f"jobs-{settings.consumer_group}",
        producer_max_request_size=MAX_REQUEST,
    )
    jobs.jobs.set_pin(pin)
    await produce_raw(settings, messages)
    async with running(jobs.app, timeout=60):
        await poll_until(
            lambda: (
                jobs.app.crashed
                or (jobs.jobs.counters.handled >= len(messages) and jobs.state_size.skipped > 0)
            ),
            40,
            "every event applied and the drift state's write skipped",
        )
        assert not jobs.app.crashed, jobs.app.crash_reason
        await poll_until(lambda: "globex" in jobs.jobs.spend.tracker.tenants(), 10, "globex")
    assert any("drift state of 'acme'" in r.getMessage() for r in caplog.records)
