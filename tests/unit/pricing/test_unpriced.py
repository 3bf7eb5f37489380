"""An unknown model is counted per model and alerted once per model by the stream jobs (never
a silent 0); the row says unpriced."""

from __future__ import annotations

from datetime import UTC, datetime

from agentaudit.sink.rows import EventCost
from agentaudit_schemas.events import parse_event
from agentaudit_schemas.pricing import current_pricing
from agentaudit_schemas.records import Alert
from stream_jobs.alert_kinds import ALERT_KINDS
from stream_jobs.jobs import StreamJobs
from tests.factories import event_dict, wire

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)


def _call(i: int, model: str, tenant: str = "acme") -> bytes:
    doc = event_dict(tenant, "llm_call")
    doc["event_id"] = f"0190c1f2-0000-7000-8000-{i:012d}"
    doc["occurred_at"] = NOW.isoformat()
    doc["payload"]["request_model"] = model
    doc["payload"].pop("response_model", None)
    return wire(doc)


def test_an_unknown_model_is_counted_and_alerted_once_per_model() -> None:
    jobs = StreamJobs(current_pricing(""))
    batch = [
        (i, _call(i, m, t))
        for i, (m, t) in enumerate(
            [
                ("gpt-9-ultra", "acme"),
                ("gpt-5-mini", "acme"),
                ("gpt-9-ultra", "globex"),
                ("my-deploy", "acme"),
                ("gpt-9-ultra", "acme"),
            ]
        )
    ]
    out = jobs.process(0, batch[:3], NOW) + jobs.process(0, batch[3:], NOW)
    alerts = [r for r in out if isinstance(r, Alert) and r.kind == "UnpricedModel"]
    assert sorted(a.details["model"] for a in alerts) == ["gpt-9-ultra", "my-deploy"]
    assert len({a.alert_id for a in alerts}) == 2 and "UnpricedModel" in ALERT_KINDS
    assert alerts[0].runbook == "runbooks/UnpricedModel.md"
    counts = jobs.unpriced.counts
    assert counts[("openai", "gpt-9-ultra")].calls == 3 and jobs.unpriced.calls == 4
    # a restarted worker re-fires the same id: the record sink stores it once
    again = StreamJobs(current_pricing("")).process(0, batch[:1], NOW)
    assert [a.alert_id for a in again] == [alerts[0].alert_id]


def test_the_row_says_unpriced() -> None:
    event = parse_event(_call(1, "gpt-9-ultra"))
    usd, priced, version = EventCost(current_pricing(""))(event)
    assert (usd, priced, version) == (0, False, current_pricing("").version)
