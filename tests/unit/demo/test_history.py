"""The demo backfill makes BehaviourDrift fire (`agentaudit.demo.history`), without a broker.

The backfill's events go through the real drift monitor in event-time order, windows closing
as the watermark passes them, like the worker does. The drifting agent's windows must close
inside the backfill whatever minute the demo starts at (hour boundaries are the edge case:
the reference needs three windows before the drifting one).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from agentaudit.demo.history import DRIFT_AGENT, build_history
from agentaudit_schemas.events import parse_event
from stream_jobs.drift.config import DriftConfig
from stream_jobs.drift.monitor import DriftMonitor
from stream_jobs.drift.pins import PinRegistry


@pytest.mark.parametrize("minute", [2, 41])
def test_the_backfill_raises_behaviour_drift_for_the_drifting_agent_only(minute: int) -> None:
    end = datetime(2026, 11, 20, 10, minute, tzinfo=UTC)
    history = build_history(5, end, seed=7)
    monitors: dict[str, DriftMonitor] = {}
    fired = []
    for offset, (at, (_, value)) in enumerate(history.before_pin + history.after_pin):
        event = parse_event(value)
        tenant = event.tenant_id
        monitor = monitors.setdefault(tenant, DriftMonitor(tenant, DriftConfig(), PinRegistry()))
        monitor.observe(event, 0, offset)
        out = monitor.close_until(at)
        fired += [
            (a.kind, a.scope.tenant_id, a.scope.agent_id)
            for a in out.alerts
            if a.kind == "BehaviourDrift"
        ]
    assert fired == [("BehaviourDrift", "globex", DRIFT_AGENT)]
