"""Is the kill switch blind? How stale the SDK's view of the control topic is.

The stream jobs beat on the control topic (key `heartbeat/stream_jobs`, a `Heartbeat`) from
their processing loop every few seconds (`stream_jobs/heartbeat.py`). The SDK's view of the
kill switch is only as fresh as the newest beat it has read: if the jobs are down, or the
SDK's listener cannot reach the broker, no block will reach it while budgets go unenforced.

- Staleness = the client's clock now − the newest beat's `at` (the jobs' clock; a host
  clock d seconds ahead of the jobs' sees its view d seconds older; a beat dated past the
  client's clock counts as sent when it was read). None before any beat.
- Stale = staleness over `stale_after_s` (default: 3 of the beat's announced intervals);
  before any beat, from the moment the client started. Going stale and recovering are
  counted and logged once each, whichever notices first: the listener's watchdog (once a
  second), a new beat, or a refused call.
- Fail-closed (opt-in, per tenant): while the view is older than the tenant's N seconds,
  `check()` raises `Blocked` (reason `kill_switch_blind`). Before any beat, N counts from
  the client's start: the listener has that long to read the topic.

The hot path (`BlindWatch.check`) is one clock read and one compare against the smallest
configured N; only past it does the tenant's own N get looked up.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from agentaudit_sdk.clock import TimeSource, utc_from_ns
from agentaudit_sdk.control import ControlState
from agentaudit_sdk.errors import Blocked

logger = logging.getLogger("agentaudit.producers")

SOURCE = "stream_jobs"
STALE_INTERVALS = 3.0
"""Stale after this many of the jobs' heartbeat intervals without a beat (3: one lost beat
and a slow one are not yet blindness)."""
DEFAULT_INTERVAL_S = 5.0
"""The jobs' default interval (`jobs_heartbeat_interval_s`), assumed before the first beat."""
BLIND_REASON = "kill_switch_blind"
RUNBOOK = "runbooks/StreamJobsSilent.md"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

FailClosed = float | Mapping[str, float] | None
"""Seconds of staleness after which work is refused: one figure for every tenant of the
client, a tenant → seconds map (tenants absent fail open), or None (nobody fails closed)."""


@dataclass(slots=True)
class BlindCounters:
    """stale: times the view went stale; recovered: times it became fresh again;
    refused: `Blocked` raised because a fail-closed tenant's view was too old."""

    stale: int = 0
    recovered: int = 0
    refused: int = 0


def _limits_ns(fail_closed: FailClosed) -> tuple[int | None, dict[str, int]]:
    """(limit for every tenant, per-tenant limits) in nanoseconds; validates the figures."""
    if fail_closed is None:
        return None, {}
    figures = {"*": fail_closed} if not isinstance(fail_closed, Mapping) else dict(fail_closed)
    for tenant, seconds in figures.items():
        if not seconds > 0:
            raise ValueError(f"fail_closed_after_s for {tenant!r} must be > 0, not {seconds!r}")
    if not isinstance(fail_closed, Mapping):
        return int(fail_closed * 1e9), {}
    return None, {tenant: int(seconds * 1e9) for tenant, seconds in figures.items()}


class BlindWatch:
    """Staleness of one client's kill-switch view, its stale/fresh transitions, fail-closed."""

    def __init__(
        self,
        state: ControlState,
        clock: TimeSource,
        *,
        stale_after_s: float | None = None,
        fail_closed_after_s: FailClosed = None,
        source: str = SOURCE,
    ) -> None:
        if stale_after_s is not None and not stale_after_s > 0:
            raise ValueError(f"stale_after_s must be > 0, not {stale_after_s!r}")
        self.state = state
        self.source = source
        self.stale_after_s = stale_after_s
        self.counters = BlindCounters()
        self.stale = False
        """As of the last `observe`: whether the view was stale."""
        self._time_ns = clock.time_ns
        self.started_ns = clock.time_ns()
        self._beat_ns: int | None = None
        self._beat: object = None  # the latest beat taken (a new one is a new object)
        self._seen_ns = self.started_ns
        """The newest beat's `at` (ns), or the start before any: what fail-closed ages from."""
        self._all_ns, self._tenant_ns = _limits_ns(fail_closed_after_s)
        limits = [x for x in (self._all_ns, *self._tenant_ns.values()) if x is not None]
        self.fail_closed = bool(limits)
        """True when some tenant fails closed: the hot path's only extra read otherwise."""
        self._min_ns = min(limits, default=0)
        self._lock = threading.Lock()
        state.subscribe(self._changed)

    # -- reading the view --------------------------------------------------------------------

    def _changed(self) -> None:
        """After every state change (listener thread): take a new beat, note a recovery."""
        beat = self.state.heartbeat(self.source)
        if beat is None or beat is self._beat:
            return  # no beat, or another record changed the state: the view is no fresher
        self._beat = beat
        # A beat was sent before it was read: one dated past the client's clock (a jobs host
        # ahead, any producer's record) counts from now, or it would keep the view "fresh"
        # until that time came, jobs dead or not.
        at_ns = min((beat.at - _EPOCH) // _MICROSECOND * 1000, self._time_ns())
        # The first beat counts even if older than the client: the topic's newest beat, read
        # at start-up an hour old, means the view is an hour old, not fresh. An older beat
        # than the newest (a second worker, a replay) changes nothing.
        if self._beat_ns is None or at_ns > self._beat_ns:
            self._beat_ns = self._seen_ns = at_ns
            if self.stale:
                self.observe()

    def staleness_s(self, now_ns: int | None = None) -> float | None:
        """Seconds since the newest beat was sent (≥ 0); None before any beat."""
        if self._beat_ns is None:
            return None
        now = self._time_ns() if now_ns is None else now_ns
        return max(0, now - self._seen_ns) / 1e9

    def threshold_s(self) -> float:
        """Staleness beyond which the view counts as stale."""
        if self.stale_after_s is not None:
            return self.stale_after_s
        beat = self.state.heartbeat(self.source)
        return STALE_INTERVALS * (beat.interval_s if beat is not None else DEFAULT_INTERVAL_S)

    def observe(self, now_ns: int | None = None) -> bool:
        """Is the view stale now? Counts and logs a change (once per change); returns it."""
        now = self._time_ns() if now_ns is None else now_ns
        age_s = max(0, now - self._seen_ns) / 1e9
        threshold = self.threshold_s()
        stale = age_s > threshold
        with self._lock:
            if stale == self.stale:
                return stale
            self.stale = stale
            if stale:
                self.counters.stale += 1
            else:
                self.counters.recovered += 1
        if stale:
            logger.warning(
                "agentaudit: kill switch blind: %s; blocks published since may not be "
                "seen (threshold %.1fs)%s",
                self._describe(now),
                threshold,
                self._policy(),
            )
        else:
            logger.warning("agentaudit: kill switch sees again: %s", self._describe(now))
        return stale

    def _describe(self, now_ns: int) -> str:
        beat = self.state.heartbeat(self.source)
        age_s = max(0, now_ns - self._seen_ns) / 1e9
        if beat is None:
            return f"no {self.source} heartbeat in the {age_s:.1f}s since the client started"
        return (
            f"last {self.source} heartbeat {age_s:.1f}s ago (at {beat.at.isoformat()}, "
            f"from {beat.worker}, seq {beat.seq})"
        )

    def _policy(self) -> str:
        if self._all_ns is not None:
            return f"; work is refused past {self._all_ns / 1e9:g}s (fail-closed)"
        if self._tenant_ns:
            named = ", ".join(f"{t} past {n / 1e9:g}s" for t, n in sorted(self._tenant_ns.items()))
            return f"; fail-closed tenants refuse work: {named}"
        return "; every tenant fails open"

    # -- the hot path ------------------------------------------------------------------------

    def check(self, tenant_of: Callable[[], str | None]) -> None:
        """Raise `Blocked` if the work's tenant fails closed and the view is too old for it.
        `tenant_of` is called only once the view is older than the smallest limit."""
        now = self._time_ns()
        if now - self._seen_ns > self._min_ns:  # the only cost while the view is fresh
            self._refuse(tenant_of(), now)

    def _refuse(self, tenant_id: str | None, now_ns: int) -> None:
        limit = self._all_ns if self._all_ns is not None else self._tenant_ns.get(tenant_id or "")
        age_ns = now_ns - self._seen_ns
        if limit is None or age_ns <= limit:
            return
        if not self.stale:
            self.observe(now_ns)
        self.counters.refused += 1
        beat = self.state.heartbeat(self.source)
        seen = "no heartbeat yet" if beat is None else f"last heartbeat at {beat.at.isoformat()}"
        message = (
            f"the kill switch cannot see the pipeline: its view is {age_ns / 1e9:.1f}s old "
            f"({seen} from the {self.source}), and this tenant fails closed past {limit / 1e9:g}s"
        )
        raise Blocked(
            scope=f"tenant={tenant_id or ''}",
            reason=BLIND_REASON,
            message=message,
            runbook=RUNBOOK,
            issued_by="agentaudit-sdk",
            issued_at=utc_from_ns(now_ns),
        )
