"""The stream jobs' counters on the worker's /metrics.

The jobs run in a process of their own (`agentaudit.jobs_process`), which reports its
counters (`stream_jobs.jobs.JobCounters.report`: totals since that process started) on
stdout when they change, at most once per tick (1 s). `JobsCounters.observe` turns each
report into counter increments: per reporting process, what grew since its last report, so
a restarted jobs process (totals from zero) adds its own counts and never subtracts.

Names (house naming, as the sink's `agentaudit_dead_letters_total{reason}`):

- `agentaudit_stream_jobs_events_total`: valid events the jobs applied (spend, breakers,
  anomaly, drift); `agentaudit_stream_jobs_invalid_total`: messages skipped as the sink
  dead-letters them; `agentaudit_stream_jobs_duplicates_total`: re-sent events (an event id
  seen recently for its tenant) counted once; `agentaudit_stream_jobs_replayed_total`:
  messages delivered again after a rebalance or a restart (the jobs had applied them; each
  job's replay guard skips them), so that the other three count each message of the log once;
- `agentaudit_stream_jobs_failed_total{job}`: events a job raised on, skipped by that job
  (`pricing`: no job saw it; `spend`, `breakers`, `detection`): any increase is a bug to
  look at (the jobs log the event's partition:offset);
- `agentaudit_stream_jobs_failed_ticks_total{job}`: timer runs a job raised in;
- `agentaudit_stream_jobs_failed_closes_total{job}`: window closes of one tenant that raised
  (`anomaly`, `drift`): that tenant's scores and alerts of the close are lost (the jobs log
  the tenant), the other tenants' come out; any increase is a bug to look at;
- `agentaudit_stream_jobs_late_total{job}`: events a job found late, dated in a window it had
  already closed (`spend`: a window of some calendar was final, the event still counts in the
  longer ones; `anomaly`: its minute; `drift`: its window); they are in the trail, not in that
  job's figures. A rise means agents' clocks or a backlog older than the grace periods;
- `agentaudit_stream_jobs_records_total`: alerts, control messages, transitions and drift
  scores the jobs published.

Counted since the worker started, like the sink's counters.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter

from agentaudit.jobs_process import REPORT_KEY

_PLAIN = ("events", "invalid", "duplicates", "replayed", "records")
_BY_JOB = ("failed", "failed_ticks", "failed_closes", "late")


class JobsCounters:
    """Prometheus counters fed by the jobs process's report lines (`observe`)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.plain = {
            "events": Counter(
                "agentaudit_stream_jobs_events",
                "Valid events the stream jobs applied.",
                registry=registry,
            ),
            "invalid": Counter(
                "agentaudit_stream_jobs_invalid",
                "Messages the stream jobs skipped as invalid (the sink dead-letters them).",
                registry=registry,
            ),
            "duplicates": Counter(
                "agentaudit_stream_jobs_duplicates",
                "Re-sent events (event id seen recently for its tenant) the jobs counted once.",
                registry=registry,
            ),
            "replayed": Counter(
                "agentaudit_stream_jobs_replayed",
                "Messages delivered to the stream jobs again after a rebalance or restart, "
                "below the offset they had applied (each job skips what it applied).",
                registry=registry,
            ),
            "records": Counter(
                "agentaudit_stream_jobs_records",
                "Alerts, control messages, transitions and drift scores the jobs published.",
                registry=registry,
            ),
        }
        self.by_job = {
            "failed": Counter(
                "agentaudit_stream_jobs_failed",
                "Events a stream job raised on and skipped, per job.",
                ["job"],
                registry=registry,
            ),
            "failed_ticks": Counter(
                "agentaudit_stream_jobs_failed_ticks",
                "Timer runs a stream job raised in, per job.",
                ["job"],
                registry=registry,
            ),
            "failed_closes": Counter(
                "agentaudit_stream_jobs_failed_closes",
                "Window closes of one tenant that raised, per job (anomaly, drift).",
                ["job"],
                registry=registry,
            ),
            "late": Counter(
                "agentaudit_stream_jobs_late",
                "Events a stream job found late (their window already closed), per job.",
                ["job"],
                registry=registry,
            ),
        }
        self._last: dict[Any, dict[str, Any]] = {}
        """Per reporting process (pid), its last report's counters."""

    def observe(self, report: dict[str, Any]) -> None:
        """One report line of a jobs process: add what its counters grew by."""
        counters = report[REPORT_KEY]
        pid = report.get("pid")
        last = self._last.get(pid, {})
        if any(_shrank(counters, last, name) for name in _PLAIN):
            last = {}  # a new process under a reused pid: its totals start from zero
        for name in _PLAIN:
            grew = int(counters.get(name, 0)) - int(last.get(name, 0))
            if grew > 0:
                self.plain[name].inc(grew)
        for name in _BY_JOB:
            now, before = counters.get(name) or {}, last.get(name) or {}
            for job, n in now.items():
                grew = int(n) - int(before.get(job, 0))
                if grew > 0:
                    self.by_job[name].labels(str(job)).inc(grew)
        self._last = {pid: counters}  # one jobs process at a time: forget the earlier ones


def _shrank(counters: dict[str, Any], last: dict[str, Any], name: str) -> bool:
    return int(counters.get(name, 0)) < int(last.get(name, 0))
