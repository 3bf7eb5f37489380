"""Per-tenant anomaly monitor: the object a faust agent keeps in a table, one per tenant.

    monitor = AnomalyMonitor("acme", config)
    monitor.observe(event, cost_usd, partition, offset)   # per event: O(1), a few µs
    alerts = monitor.close_until(now)                    # per minute: numpy runs here
    table["acme"] = monitor.to_state()                   # plain JSON

Series: the tenant as a whole, plus each of its first `max_agents` agents. An agent series
alerts only while its trailing median call volume reaches `agent_min_calls_per_minute`
("where volume allows"). When the tenant and one of its agents fire the same kind in the
same minute, the agent is named in the tenant alert instead of paging twice.

Event time drives everything: an event counts in the minute of its `occurred_at`; a minute
closes when `close_until(now)` passes its end plus `grace_minutes`; events for a closed
minute are late (counted, not applied). `now` may be the tenant's own event-time watermark
(`watermark`, deterministic under replay) or the wall clock (so silent tenants' minutes
close too). Records at or below the last applied offset of their partition are skipped,
so replaying from a committed offset after a crash changes nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from agentaudit_schemas.records import Alert, Scope
from stream_jobs.anomaly.alerts import KIND_OF, build_alert
from stream_jobs.anomaly.config import AnomalyConfig
from stream_jobs.anomaly.replay import OffsetGuard
from stream_jobs.anomaly.series import METRICS, MinuteAcc
from stream_jobs.anomaly.timebase import minute_of
from stream_jobs.anomaly.tracker import SeriesTracker

STATE_VERSION = 1
_TENANT = ""
"""Series key of the tenant as a whole; other keys are agent ids."""


class AnomalyMonitor:
    """All anomaly state of one tenant."""

    def __init__(self, tenant_id: str, config: AnomalyConfig) -> None:
        self.tenant_id = tenant_id
        self.config = config
        self.guard = OffsetGuard()
        self.series: dict[str, SeriesTracker] = {_TENANT: SeriesTracker(config)}
        self.late_events = 0
        """Events for minutes already closed (still in the audit trail, not in the series)."""
        self.dropped_events = 0
        """Events too far ahead of the closed minutes (bounded memory)."""
        self.untracked_agent_events = 0
        """Events of agents beyond `max_agents` (counted in the tenant series only)."""
        self._watermark: datetime | None = None

    @property
    def watermark(self) -> datetime | None:
        """Latest `occurred_at` applied: the tenant's event-time clock."""
        return self._watermark

    def observe(self, event: Any, cost_usd: float, partition: int, offset: int) -> bool:
        """Count one decoded event; False when the record was applied before (replay)."""
        if not self.guard.accept(partition, offset):
            return False
        at = event.occurred_at
        minute = int(at.timestamp() // 60)
        if self._watermark is None or at > self._watermark:
            self._watermark = at
        cost = float(cost_usd)
        tenant = self.series[_TENANT]
        acc = tenant.acc_for(minute)
        if acc is None:
            if tenant.closed_until is not None and minute <= tenant.closed_until:
                self.late_events += 1
            else:
                self.dropped_events += 1
            return True
        acc.add(event, cost)
        agent = self.series.get(event.agent_id)
        if agent is None:
            if len(self.series) > self.config.max_agents:
                self.untracked_agent_events += 1
                return True
            agent = self.series[event.agent_id] = SeriesTracker(self.config)
        agent_acc = agent.acc_for(minute)
        if agent_acc is not None:
            agent_acc.add(event, cost)
        return True

    def ingest_minute(self, minute: int, acc: MinuteAcc) -> bool:
        """Add pre-aggregated sums for one minute to the tenant series.

        For simulators and for warming a new deployment from ClickHouse per-minute rollups
        (skipping the cold start). False when the minute is already closed. `acc` may be
        kept as the minute's accumulator: do not reuse it. Also False when the minute lies
        more than `MAX_OPEN_MINUTES` past the last closed one: close up to it first.
        """
        target = self.series[_TENANT].acc_for(minute, fresh=acc)
        if target is None:
            return False
        if target is not acc:
            target.merge(acc)
        return True

    def close_until(self, now: datetime) -> list[Alert]:
        """Close every minute that ended at least `grace_minutes` before `now`; new alerts.

        The work is bounded by the data, never by the time gap: minutes are closed one by one
        only up to the next minute holding data, and a silence longer than
        `max_catch_up_minutes` is skipped (the series restart cold) instead of walked. So an
        event dated years ago, or a clock that jumps a month, costs at most
        `max_catch_up_minutes` closes per series, not one close per minute of the gap.
        """
        target = minute_of(now) - 1 - self.config.grace_minutes
        alerts: list[Alert] = []
        tenant = self.series[_TENANT]
        while tenant.closed_until is not None and tenant.closed_until < target:
            closed = tenant.closed_until
            data = self._next_open_minute(closed)
            quiet_until = target if data is None or data > target else data - 1
            if quiet_until - closed > self.config.max_catch_up_minutes:
                self._skip_silence(quiet_until)
                continue
            for minute in range(closed + 1, min(target, quiet_until + 1) + 1):
                alerts.extend(self._close_minute(minute, now))
        self._evict_idle_agents(target)
        return alerts

    def _next_open_minute(self, after: int) -> int | None:
        """The earliest minute after `after` that holds data in any series."""
        return min((m for s in self.series.values() for m in s.open if m > after), default=None)

    def _skip_silence(self, quiet_until: int) -> None:
        """Restart every series silent through `quiet_until`: each resumes at its next open
        minute (or at its next event), cold, keeping seasonal profiles and cooldowns."""
        for series in self.series.values():
            if series.closed_until is not None and series.closed_until < quiet_until:
                series.restart(self.config)

    def _close_minute(self, minute: int, now: datetime) -> list[Alert]:
        cfg, th = self.config, self.config.thresholds(self.tenant_id)
        fired: dict[str, Alert] = {}
        agent_hits: dict[str, list[str]] = {}
        for key, series in self.series.items():
            if series.closed_until is None or minute <= series.closed_until:
                continue
            eligible = key == _TENANT or series.median_calls(cfg) >= cfg.agent_min_calls_per_minute
            findings, support = series.close(minute, cfg, th)
            for f in findings if eligible else []:
                kind = KIND_OF[METRICS[f.metric]]
                if minute < series.cooldown.get(kind, minute):
                    continue
                series.cooldown[kind] = minute + int(th.cooldown[f.metric])
                if key != _TENANT:
                    agent_hits.setdefault(kind, []).append(key)
                scope = Scope(tenant_id=self.tenant_id, agent_id=key or None)
                fired[f"{kind}/{key}"] = build_alert(
                    scope,
                    f,
                    minute,
                    now,
                    int(support[f.metric]),
                    cfg.trailing_minutes,
                    cfg.seasonal_weeks,
                    cfg.window_minutes,
                )
        out: list[Alert] = []
        for name, alert in fired.items():
            kind, key = name.split("/", 1)
            if key and f"{kind}/" in fired:
                continue  # named in the tenant-level alert below
            if not key and kind in agent_hits:
                details = {**alert.details, "agents": ",".join(sorted(agent_hits[kind]))}
                alert = alert.model_copy(update={"details": details})
            out.append(alert)
        return out

    def _evict_idle_agents(self, target: int) -> None:
        """Drop agent series silent for a day, so a tenant's state does not grow forever."""
        for key in [k for k, s in self.series.items() if k != _TENANT]:
            last = self.series[key].last_event_minute
            if last is not None and target - last > 24 * 60 and not self.series[key].open:
                del self.series[key]

    @property
    def profiles_hour(self) -> int | None:
        """Minute index of the last hour folded into the profiles: when it changes, the
        profiles changed (persist `profiles_state()` then, if kept apart)."""
        closed = self.series[_TENANT].closed_until
        return None if closed is None else (closed + 1) // 60 * 60 - 60

    def profiles_state(self) -> dict[str, Any]:
        """The hourly profiles of every series: ~90 % of the state, changing once an hour."""
        return {k: s.profiles_state() for k, s in self.series.items()}

    def to_state(self, profiles: bool = True) -> dict[str, Any]:
        """JSON-serialisable state (for a faust table value).

        `profiles=False` leaves out the weekly/daily profiles so a table written every
        batch stays small (a few kB a series); store `profiles_state()` apart, at least once
        per hour, and pass it back to `from_state`.
        """
        return {
            "v": STATE_VERSION,
            "tenant": self.tenant_id,
            "offsets": self.guard.to_state(),
            "watermark": None if self._watermark is None else self._watermark.isoformat(),
            "counters": [self.late_events, self.dropped_events, self.untracked_agent_events],
            "series": {k: s.to_state(profiles) for k, s in self.series.items()},
        }

    @classmethod
    def from_state(
        cls, state: dict[str, Any], config: AnomalyConfig, profiles: dict[str, Any] | None = None
    ) -> AnomalyMonitor:
        """Restore; `profiles` (from `profiles_state`) when they were stored apart."""
        if state.get("v") != STATE_VERSION:
            raise ValueError(f"anomaly state version {state.get('v')!r}, expected {STATE_VERSION}")
        m = cls(state["tenant"], config)
        m.guard = OffsetGuard.from_state(state["offsets"])
        wm = state["watermark"]
        m._watermark = None if wm is None else datetime.fromisoformat(wm)
        m.late_events, m.dropped_events, m.untracked_agent_events = state["counters"]
        m.series = {k: SeriesTracker.from_state(s, config) for k, s in state["series"].items()}
        for key, saved in (profiles or {}).items():
            if key in m.series:
                m.series[key].load_profiles(saved)
        return m
