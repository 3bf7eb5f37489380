"""All per-worker stream-job state behind one faust-free object the topology drives.

`StreamJobs.process(partition, items, now)` decodes a batch of one partition's messages with
the sink's own verdict (`agentaudit.sink.decode.validate`) and cost (`EventCost`, the same
pricing code), feeds the spend/budget, breaker, anomaly and drift jobs (`DetectionJob`), and
returns the records to publish.
Invalid messages are skipped and counted: the sink dead-letters them, so the jobs see
exactly the events the trail holds. State keys and their partitions come from the jobs
(`dirty_states`), so the topology writes each changelog value where it belongs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agentaudit.sink.decode import Rejected, not_after, validate
from agentaudit.sink.dedup import event_key
from agentaudit.sink.rows import EventCost
from agentaudit_schemas.budgets import Budget, BudgetScope
from agentaudit_schemas.pricing import Pricing
from agentaudit_schemas.records import Alert, BreakerTransition, ControlMessage, DriftScore
from stream_jobs.anomaly.config import AnomalyConfig
from stream_jobs.breaker.board import BreakerBoard
from stream_jobs.breaker.config import BreakerConfig
from stream_jobs.checkpoint import ANOMALY, DRIFT
from stream_jobs.delivery import DeliveryFence
from stream_jobs.detection import DetectionJob, ModelPin
from stream_jobs.drift.config import DriftConfig
from stream_jobs.drift.pins import Pin
from stream_jobs.keyed_state import PartitionedState
from stream_jobs.recent_log import RecentLog
from stream_jobs.spend.job import SpendJob
from stream_jobs.spend.readout import applied_position
from stream_jobs.spend.unpriced import UnpricedModels

Record = Alert | ControlMessage | BreakerTransition | DriftScore
RECENT = "recent"
"""The table of the recent event ids (`stream_jobs.recent_log`)."""
log = logging.getLogger("agentaudit.stream_jobs")


@dataclass
class JobCounters:
    events: int = 0
    invalid: int = 0
    records: int = 0
    failed: int = 0
    """Valid events a job raised on (once per event and job): logged with their offset and
    skipped by that job only (never a stall); `failed_by_job` says which job."""
    failed_ticks: int = 0
    """Timer runs a job raised in: logged and skipped (the other jobs' timer work still runs;
    an exception out of the timer ended the app, and the restart raised again)."""
    failed_by_job: dict[str, int] = field(default_factory=dict)
    """`failed` per job: `pricing` (no job saw the event), `spend`, `breakers`, `detection`."""
    failed_ticks_by_job: dict[str, int] = field(default_factory=dict)
    """`failed_ticks` per job: `spend`, `breakers`, `detection`."""
    duplicates: int = 0
    """Re-sent events (an `event_id` seen recently): the sink stores them once, so the jobs
    count them once."""
    replayed: int = 0
    """Messages delivered again at or below the offset the jobs had applied (after a
    rebalance or a restart): skipped, each job having applied them once."""
    failed_closes_by_job: dict[str, int] = field(default_factory=dict)
    """Window closes that raised, per job (`anomaly`, `drift`): that tenant's scores and
    alerts of the close are lost (logged with the tenant), the other tenants' are not."""
    late_by_job: dict[str, int] = field(default_factory=dict)
    """Events a job found late, per job: `spend` (a window of some calendar was already
    final: not added there, still in longer open windows), `anomaly` (its minute closed),
    `drift` (its window closed). Still in the trail; not in that job's figures."""

    @property
    def handled(self) -> int:
        """Messages taken in any way (applied, invalid or duplicate): progress through a topic."""
        return self.events + self.invalid + self.duplicates + self.replayed

    def report(self) -> dict[str, Any]:
        """The counters as JSON fields, totals since this process started: what the jobs
        process reports to its worker for /metrics (`agentaudit.health.jobs_counters`)."""
        return {
            "events": self.events,
            "invalid": self.invalid,
            "duplicates": self.duplicates,
            "replayed": self.replayed,
            "records": self.records,
            "failed": dict(self.failed_by_job),
            "failed_ticks": dict(self.failed_ticks_by_job),
            "late": dict(self.late_by_job),
            "failed_closes": dict(self.failed_closes_by_job),
        }


@dataclass(frozen=True)
class StateWrite:
    """One table value to write: `job` names the table, `partition` its changelog partition."""

    job: str
    key: str
    partition: int | None
    value: dict[str, Any] | bytes | None
    """A dict (JSON tables: spend, breakers) or encoded JSON (raw tables: anomaly, drift)."""


class StreamJobs:
    """Spend + budgets, circuit breakers, anomaly and drift for the partitions this worker owns."""

    def __init__(
        self,
        pricing: Pricing,
        budgets: Iterable[Budget] = (),
        breaker_config: BreakerConfig | None = None,
        *,
        issued_by: str = "agentaudit.stream_jobs",
        anomaly_config: AnomalyConfig | None = None,
        drift_config: DriftConfig | None = None,
        max_clock_skew_s: float = 900.0,
        dedup_window: int = 200_000,
    ) -> None:
        self.issued_by = issued_by
        """Who the jobs' control messages name (an operator's name anything else)."""
        self.cost = EventCost(pricing)
        self.max_skew_ms = max_clock_skew_s * 1000
        self.recent = RecentLog(dedup_window)
        """Recent event ids: an SDK retry is a new message with the same id. Persisted in the
        table `recent` (see `stream_jobs.recent_log`), so a copy arriving after a restart or a
        rebalance is known too, as it is to the sink."""
        self.spend = SpendJob(budgets, issued_by=issued_by)
        self.breakers = BreakerBoard(breaker_config, issued_by=issued_by)
        self.detection = DetectionJob(anomaly_config, drift_config)
        self.counters = JobCounters()
        self.unpriced = UnpricedModels()
        """`llm_call`s no price source knows, per (provider, model); `UnpricedModel` once each."""
        self.fence = DeliveryFence()
        """Ask `fence.admit` before `process`: a batch past a hole must not be applied."""

    def process(
        self, partition: int, items: Iterable[tuple[Any, ...]], now: datetime
    ) -> list[Record]:
        """Apply one partition's messages in order; the records they cause. Items are
        `(offset, value)` or `(offset, value, timestamp_ms)` (Kafka's record timestamp, for
        the sink's clock-skew rule)."""
        out: list[Record] = []
        spend, breakers, cost, counters = self.spend, self.breakers, self.cost, self.counters
        detection = self.detection
        detection.begin_batch(partition, now)
        offset = -1
        skew, recent_add = self.max_skew_ms, self.recent.add
        applied = self.fence.last_applied(partition)
        applied = -1 if applied is None else applied
        for item in items:
            offset, value = item[0], item[1]
            # Delivered again after a rebalance or a restart: each job's own replay guard
            # decides (one job's state may be older than another's after a crash mid-write,
            # so it is not skipped here), but it is counted apart: events, invalid and
            # duplicates count each message of the log once.
            replay = offset <= applied
            # The sink's own verdict (duplicate keys, clock skew against the record's
            # timestamp included): the jobs count exactly the events the trail holds.
            event = validate(value, not_after(item[2], skew) if len(item) > 2 else None)
            if isinstance(event, Rejected):
                if replay:
                    counters.replayed += 1
                else:
                    counters.invalid += 1
                continue
            # A new message carrying a known id is a re-sent event. Per tenant, as the sink
            # remembers them (`event_key`): an id another tenant sent first is a different
            # event, and the trail stores it.
            if not recent_add(partition, event_key(event.tenant_id, event.event_id)) and not replay:
                counters.duplicates += 1
                continue
            if replay:
                counters.replayed += 1
            else:
                counters.events += 1
            # One event must not stop the partition (or the worker), and one job raising on
            # it must not keep it from the others: a spend bug used to skip the event's
            # breaker signal too, so a poison event could hide a trip.
            try:
                usd, priced, version = cost(event)
                if not priced:  # counted per model, alerted once per model
                    unpriced = self.unpriced.observe(event, version, now)
                    if unpriced is not None:
                        out.append(unpriced)
            except Exception:  # noqa: BLE001 (logged by _failed) no cost: no job can take it
                self._failed("pricing", partition, offset, event.tenant_id)
                continue
            try:
                spent = spend.observe(event, usd, partition, offset, now)
                if spent:
                    out += spent
            except Exception:  # noqa: BLE001 (logged by _failed)
                self._failed("spend", partition, offset, event.tenant_id)
            try:
                tripped = breakers.observe(event, usd, partition, offset, now)
                if tripped:
                    out += tripped
            except Exception:  # noqa: BLE001 (logged by _failed)
                self._failed("breakers", partition, offset, event.tenant_id)
            try:
                detected = detection.observe(event, usd, partition, offset)
                if detected:
                    out += detected
            except Exception:  # noqa: BLE001 (logged by _failed)
                self._failed("detection", partition, offset, event.tenant_id)
        if offset >= 0:
            self.fence.applied(partition, offset)
        counters.records += len(out)
        self._count_late()
        return out

    def _count_late(self) -> None:
        """The jobs' late events and failed window closes so far (totals of this process, as
        the other counters)."""
        late = {"spend": self.spend.tracker.late_dropped, **self.detection.late}
        self.counters.late_by_job = {job: n for job, n in late.items() if n}
        self.counters.failed_closes_by_job = dict(self.detection.failed_closes)

    def _failed(self, job: str, partition: int, offset: int, tenant: str) -> None:
        counters = self.counters
        counters.failed += 1
        counters.failed_by_job[job] = counters.failed_by_job.get(job, 0) + 1
        log.exception(
            "stream jobs: %s skipped event at %d:%d (tenant %s)", job, partition, offset, tenant
        )

    def tick(self, now: datetime) -> list[Record]:
        """Timer work: budget window resets, breaker cooldowns (open → half_open), minutes and
        windows of idle partitions closing by the clock (anomaly, drift)."""
        out: list[Record] = []
        for name, tick in (
            ("spend", self.spend.tick),
            ("breakers", self.breakers.tick),
            ("detection", self.detection.tick),
        ):
            try:
                out += tick(now)
            except Exception:  # one job's timer work must not stop the others (or the app)
                self.counters.failed_ticks += 1
                by_job = self.counters.failed_ticks_by_job
                by_job[name] = by_job.get(name, 0) + 1
                log.exception("stream jobs: the %s timer work raised; skipped this tick", name)
        self.counters.records += len(out)
        self._count_late()
        return out

    def operator_unblocked(self, message: ControlMessage, now: datetime) -> list[Record]:
        """An operator's UNBLOCK: the breaker of that scope, if open, judges calls again."""
        return list(
            self.breakers.operator_unblocked(
                message.scope, message.issued_at, message.control_id, now
            )
        )

    def set_budget(self, budget: Budget, now: datetime) -> list[Record]:
        if budget.scope is BudgetScope.GLOBAL:
            # Nothing publishes the per-partition partials or runs their aggregator
            # (`GlobalBudgetJob`), so it would never alert nor block: say so, keep no partials
            # for it, and drop a budget of that name this one replaces.
            log.error(
                "budget %r (scope global) is not evaluated: the stream jobs do not aggregate "
                "spend across partitions yet; it will neither alert nor block",
                budget.name,
            )
            return list(self.spend.remove_budget(budget.name, now))
        return list(self.spend.set_budget(budget, now))

    def remove_budget(self, name: str, now: datetime) -> list[Record]:
        return list(self.spend.remove_budget(name, now))

    def set_pin(self, pin: Pin, models: Iterable[ModelPin] = ()) -> list[Record]:
        """A gold-set pin from the pins topic (and the served models it approves)."""
        self.detection.set_pin(pin, models)
        return []

    def remove_pin(self, tenant_id: str, gold_set_id: str, metric: str) -> list[Record]:
        """A pin's tombstone: results of that gold set metric are no longer compared (the
        served-model pins it set stay in force)."""
        self.detection.pins.unpin(tenant_id, gold_set_id, metric)
        return []

    def dirty_states(self) -> list[StateWrite]:
        """Table values changed since the last call. Write them after publishing the records
        of the same batch: a crash in between replays the batch and re-publishes the same ids."""
        # No rollups are stored from here: windows past their grace are forgotten before the
        # write (a tenant whose window was dropped is dirty, so its smaller state is written).
        self.spend.expire_windows()
        # Only keys this worker holds (a known partition): a forgotten tenant marked dirty by a
        # budget change must not be written as an empty or partial value.
        writes = [
            StateWrite(job, k, p, state.to_state(k))
            for job, state in self._tables()
            for k in sorted(state.pop_dirty())
            if (p := state.partition_of(k)) is not None
        ]
        writes += [StateWrite(*write) for write in self.detection.dirty_states()]
        writes += [StateWrite(RECENT, k, p, v) for k, p, v in self.recent.writes()]
        return writes

    def restore(self, job: str, key: str, value: Any) -> None:
        """Load one recovered table value (after a restart or a rebalance)."""
        if job == "spend":
            self.spend.from_state(key, value)
            applied = applied_position(value)
            if applied is not None:
                self.fence.seed(*applied)
        elif job in (ANOMALY, DRIFT):
            self.detection.restore(job, key, value)
        elif job == RECENT:
            self.recent.restore(key, value)
        else:
            self.breakers.from_state(key, value)

    def retain_partitions(self, assigned: set[int]) -> None:
        """After a rebalance: keep only the tenants of `assigned` partitions in memory."""
        self.detection.retain_partitions(assigned)
        self.recent.retain(assigned)
        self._drop_tenants(lambda p: p not in assigned)
        self.fence.retain(assigned)

    def forget_partitions(self, revoked: set[int]) -> None:
        """Partitions were revoked: drop their tenants from memory (state stays in the tables;
        whichever worker is assigned them recovers it). A worker must never write state of a
        tenant it no longer owns: a budget change would otherwise write its stale copy over the
        new owner's changelog value."""
        self.detection.forget_partitions(revoked)
        self.recent.forget(revoked)
        self._drop_tenants(lambda p: p in revoked)

    def _tables(self) -> tuple[tuple[str, PartitionedState], ...]:
        """The JSON tables' jobs by table name, in the order their values are written."""
        return (("spend", self.spend), ("breakers", self.breakers))

    def _drop_tenants(self, gone: Callable[[int], bool]) -> None:
        for _, state in self._tables():
            for tenant in state.tenants():
                partition = state.partition_of(tenant)
                if partition is not None and gone(partition):
                    state.forget(tenant)
