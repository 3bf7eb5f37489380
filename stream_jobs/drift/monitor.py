"""Per-tenant drift monitor: eval drift, behaviour drift and model version changes.

    drift = DriftMonitor("acme", config, pins)
    alerts = drift.observe(event, partition, offset)   # per event, O(1); model changes now
    out = drift.close_until(now)                       # per window: scipy runs here
    out.scores, out.alerts                             # DriftScores; EvalDrift/BehaviourDrift
    table["acme"] = drift.to_state()

Event time: an event counts in the window of its `occurred_at`; a window closes when `now`
passes its end plus `grace_minutes`; events for closed windows are late (counted). Records
at or below the last applied offset of their partition are skipped (replay after a crash).
`pins` is shared and read at observe/close time, so a new pin takes effect without a restart.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

from agentaudit_schemas.records import Alert, DriftScore
from stream_jobs.anomaly.replay import OffsetGuard
from stream_jobs.anomaly.timebase import minute_of
from stream_jobs.drift.behaviour import AgentBehaviour
from stream_jobs.drift.config import DriftConfig
from stream_jobs.drift.eval_drift import EvalWindows
from stream_jobs.drift.model_version import ModelVersionTracker
from stream_jobs.drift.outputs import behaviour_alert, drift_score, eval_alert, eval_scores
from stream_jobs.drift.pins import PinRegistry

STATE_VERSION = 1
MAX_OPEN_WINDOWS = 48
"""Events more windows than this ahead of the last closed window are dropped (counted)."""


class DriftOutput(NamedTuple):
    scores: list[DriftScore]
    alerts: list[Alert]


class DriftMonitor:
    """All drift state of one tenant (pins live outside: they are configuration)."""

    def __init__(self, tenant_id: str, config: DriftConfig, pins: PinRegistry) -> None:
        self.tenant_id = tenant_id
        self.config = config
        self.pins = pins
        self.guard = OffsetGuard()
        self.evals = EvalWindows()
        self.behaviour: dict[str, AgentBehaviour] = {}
        self.models = ModelVersionTracker(tenant_id, config.max_model_keys)
        self.versions: dict[str, str] = {}
        """agent → latest agent_version seen."""
        self.closed_until: int | None = None
        """Last closed window index."""
        self.cooldown: dict[str, int] = {}
        """alert key → first minute it may fire again."""
        self.late_events = 0
        self.dropped_events = 0
        self.untracked_agent_events = 0

    def observe(self, event: Any, partition: int, offset: int) -> list[Alert]:
        """Apply one decoded event; returns a ModelVersionChanged alert when one fires."""
        if not self.guard.accept(partition, offset):
            return []
        kind = event.type
        if kind not in ("llm_call", "tool_call", "eval_result"):
            return []
        window = minute_of(event.occurred_at) // self.config.window_minutes
        if self.closed_until is None:
            self.closed_until = window - 1
        if window <= self.closed_until:
            self.late_events += 1
            return []
        if window > self.closed_until + MAX_OPEN_WINDOWS:
            self.dropped_events += 1  # far in the future (a skewed clock): bounded memory
            return []
        if kind == "eval_result":
            self.evals.observe(event, window, self.pins, self.config)
            return []
        agent = event.agent_id
        if agent in self.versions or len(self.versions) < self.config.max_agents:
            self.versions[agent] = event.agent_version
        tracker = self.behaviour.get(agent)
        if tracker is None and len(self.behaviour) < self.config.max_agents:
            tracker = self.behaviour[agent] = AgentBehaviour()
        if tracker is None:
            self.untracked_agent_events += 1
        else:
            tracker.observe(event, window)
        if kind == "llm_call":
            alert = self.models.observe(event, event.occurred_at)
            if alert is not None:
                return [alert]
        return []

    def close_until(self, now: datetime) -> DriftOutput:
        """Close every window that ended `grace_minutes` or more before `now`."""
        size = self.config.window_minutes
        target = (minute_of(now) - self.config.grace_minutes) // size - 1
        scores: list[DriftScore] = []
        alerts: list[Alert] = []
        if self.closed_until is None or target <= self.closed_until:
            return DriftOutput(scores, alerts)
        pending = {k[0] for k in self.evals.groups} | {
            w for b in self.behaviour.values() for w in b.open
        }
        for window in sorted(w for w in pending if w <= target):
            self._close_window(window, now, scores, alerts)
        self.closed_until = target
        return DriftOutput(scores, alerts)

    def _close_window(
        self, window: int, now: datetime, scores: list[DriftScore], alerts: list[Alert]
    ) -> None:
        cfg, size, tenant = self.config, self.config.window_minutes, self.tenant_id
        start_minute = window * size
        for e in self.evals.close(window, tenant, self.pins, cfg):
            model = self.models.last_served.get(e.agent_id, "")
            scores.extend(eval_scores(tenant, e, model, window, size))
            key = f"eval/{e.agent_id}/{e.gold_set_id}/{e.metric}/{e.agent_version}"
            if e.drifted and start_minute >= self.cooldown.get(key, start_minute):
                self.cooldown[key] = start_minute + cfg.eval_cooldown_minutes
                alerts.append(eval_alert(tenant, e, model, window, size, now))
        for agent_id, tracker in sorted(self.behaviour.items()):
            outcomes = tracker.close(window, agent_id, cfg)
            version, model = (
                self.versions.get(agent_id, ""),
                self.models.last_served.get(agent_id, ""),
            )
            for o in outcomes:
                scores.append(
                    drift_score(
                        tenant,
                        agent_id,
                        o.subject,
                        version,
                        model,
                        o.result,
                        o.reference_n,
                        o.current_n,
                        window,
                        size,
                    )
                )
            drifted = [o for o in outcomes if o.result.drifted]
            key = f"behaviour/{agent_id}"
            if drifted and start_minute >= self.cooldown.get(key, start_minute):
                self.cooldown[key] = start_minute + cfg.behaviour_cooldown_minutes
                alerts.append(behaviour_alert(tenant, agent_id, drifted, window, size, now))

    def to_state(self) -> dict[str, Any]:
        return {
            "v": STATE_VERSION,
            "tenant": self.tenant_id,
            "offsets": self.guard.to_state(),
            "evals": self.evals.to_state(),
            "behaviour": {a: b.to_state() for a, b in self.behaviour.items()},
            "models": self.models.to_state(),
            "versions": self.versions,
            "closed_until": self.closed_until,
            "cooldown": self.cooldown,
            "counters": [self.late_events, self.untracked_agent_events, self.dropped_events],
        }

    @classmethod
    def from_state(
        cls, state: dict[str, Any], config: DriftConfig, pins: PinRegistry
    ) -> DriftMonitor:
        if state.get("v") != STATE_VERSION:
            raise ValueError(f"drift state version {state.get('v')!r}, expected {STATE_VERSION}")
        m = cls(state["tenant"], config, pins)
        m.guard = OffsetGuard.from_state(state["offsets"])
        m.evals = EvalWindows.from_state(state["evals"])
        m.behaviour = {a: AgentBehaviour.from_state(b) for a, b in state["behaviour"].items()}
        m.models = ModelVersionTracker.from_state(
            m.tenant_id, config.max_model_keys, state["models"]
        )
        m.versions = dict(state["versions"])
        m.closed_until = state["closed_until"]
        m.cooldown = {str(k): int(v) for k, v in state["cooldown"].items()}
        m.late_events, m.untracked_agent_events, m.dropped_events = state["counters"]
        return m
