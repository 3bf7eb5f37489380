"""Anomaly and drift monitors of the tenants this worker owns, behind one faust-free object.

Per tenant an `AnomalyMonitor` and a `DriftMonitor`, created on the tenant's first event and
fed in the event loop (constant time per event). Minutes (anomaly) and windows (drift)
close in **event time**, driven per source partition:

- **partition watermark**: when an event carries its partition into a new minute, every
  tenant of that partition is closed up to that event's time (`close_until`), before the
  event is applied. A tenant that went quiet in a busy partition still closes, and where a
  minute closes is fixed by the partition's event order, not by batch boundaries or the
  wall clock, so a replay after a crash decides exactly as the first run. Events dated more
  than `MAX_FUTURE` ahead of the worker clock do not move it, and nearer ones move it only
  up to the worker clock + `CLOCK_TOLERANCE` (one tenant's skewed clock must not close
  everyone's minutes early: their events would be dropped as late). In a backlog the clock
  is far ahead of the events, so this changes nothing there; a skewed event within a
  backlog still closes early.
- **wall clock, for idle partitions**: on `tick(now)`, a partition that delivered nothing for
  `idle_seconds` is closed up to `now` (the monitors still wait `grace_minutes` past a
  minute's end), so a tenant whose whole partition went silent still gets its minutes and
  windows closed, and a drop to zero is seen. A partition with a backlog keeps delivering
  batches, so the wall clock never overtakes its events.

Alerts carry `fired_at` = the worker clock when they fired; ids do not depend on it.

State (`dirty_states` → tables `anomaly` and `drift`, keys `<tenant>`, `<tenant>|live`,
`<tenant>|profiles`, in the tenant's source partition; values are JSON bytes, so the tables
use the raw value serializer): see `stream_jobs.checkpoint`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import yaml

from agentaudit_schemas.records import Alert, DriftScore
from stream_jobs import checkpoint as cp
from stream_jobs.anomaly.config import AnomalyConfig
from stream_jobs.anomaly.monitor import AnomalyMonitor
from stream_jobs.checkpoint import ANOMALY, DRIFT, Write
from stream_jobs.drift.config import DriftConfig
from stream_jobs.drift.monitor import DriftMonitor
from stream_jobs.drift.pins import Pin, PinRegistry

log = logging.getLogger("agentaudit.stream_jobs.detection")

MAX_FUTURE = timedelta(minutes=5)
CLOCK_TOLERANCE = timedelta(minutes=1)
"""How far past the worker clock an event still moves its partition's watermark: host clocks
differ by seconds, and within a batch later events may be dated after its start."""
IDLE_SECONDS = 10.0
DRIFT_TYPES = frozenset({"llm_call", "tool_call", "eval_result"})
Detected = Alert | DriftScore
ModelPin = tuple[str, str, str]
"""(agent_id, request_model, approved response_model)."""


def load_detection_config(path: Path) -> tuple[AnomalyConfig, DriftConfig]:
    """`{anomaly: {...}, drift: {...}}` YAML (see `AnomalyConfig.from_mapping` for per-tenant
    sensitivity); either part may be left out. Unknown keys raise ValueError naming them."""
    doc = yaml.safe_load(path.read_text()) or {}
    unknown = set(doc) - {ANOMALY, DRIFT}
    if unknown:
        raise ValueError(f"{path}: unknown sections {sorted(unknown)}; known: anomaly, drift")
    return (
        AnomalyConfig.from_mapping(doc.get(ANOMALY) or {}),
        DriftConfig.from_mapping(doc.get(DRIFT) or {}),
    )


@dataclass
class _Tenant:
    partition: int
    anomaly: AnomalyMonitor
    drift: DriftMonitor
    book: cp.Book = field(default_factory=cp.Book)


class DetectionJob:
    """Anomaly + drift for the partitions this worker owns (see module doc)."""

    def __init__(
        self,
        anomaly_config: AnomalyConfig | None = None,
        drift_config: DriftConfig | None = None,
        *,
        idle_seconds: float = IDLE_SECONDS,
    ) -> None:
        self.anomaly_config = anomaly_config or AnomalyConfig()
        self.drift_config = drift_config or DriftConfig()
        self.idle = timedelta(seconds=idle_seconds)
        self.pins = PinRegistry()
        self.model_pins: dict[str, dict[tuple[str, str], str]] = {}
        self.tenants: dict[str, _Tenant] = {}
        self.by_partition: dict[int, set[str]] = {}
        self.partition_minute: dict[int, int] = {}
        """Latest minute index each partition's watermark (or idle clock) reached."""
        self.last_batch: dict[int, datetime] = {}
        self._dirty: dict[str, set[str]] = {ANOMALY: set(), DRIFT: set()}
        """Tenants whose anomaly / drift state changed since the last `dirty_states`."""
        self._pending: dict[str, cp.Pieces] = {}
        self._now: datetime | None = None
        self.failed_closes: dict[str, int] = {}
        """Window closes that raised, per job (`anomaly`, `drift`), this process: logged; the
        other tenants' closes of the same call still come out."""
        self.late: dict[str, int] = {ANOMALY: 0, DRIFT: 0}
        """Events this process found late (their minute or window already closed), per job:
        still in the trail, not in the series. Totals of this process, for /metrics (the
        monitors' own `late_events` are per tenant and move with its partition's state)."""

    # -- per batch, per event -----------------------------------------------------------------

    def begin_batch(self, partition: int, now: datetime) -> None:
        """Call before a partition's batch: `now` is the worker clock."""
        if self._pending:
            self._materialize()
        self.last_batch[partition] = now
        self._now = now

    def observe(self, event: Any, usd: Any, partition: int, offset: int) -> list[Detected]:
        """Apply one decoded event; the records it (or the minute it opened) caused."""
        out: list[Detected] = []
        at = event.occurred_at
        minute = int(at.timestamp() // 60)
        if minute > self.partition_minute.get(partition, -1):
            now = self._now or at
            if at <= now + MAX_FUTURE:
                # Not past the worker clock (give or take `CLOCK_TOLERANCE`): one event dated
                # a few minutes ahead would close every tenant's next minutes, dropping their
                # events as late.
                until = min(at, now + CLOCK_TOLERANCE)
                until_minute = int(until.timestamp() // 60)
                if until_minute > self.partition_minute.get(partition, -1):
                    self.partition_minute[partition] = until_minute
                    out = self._close_partition(partition, until, now)
        tenant = self.tenants.get(event.tenant_id)
        if tenant is None or tenant.partition != partition:
            tenant = self._tenant(event.tenant_id, partition)
        self._dirty[ANOMALY].add(event.tenant_id)
        anomaly = tenant.anomaly
        late = anomaly.late_events
        anomaly.observe(event, usd, partition, offset)
        if anomaly.late_events != late:
            self.late[ANOMALY] += 1
        if event.type in DRIFT_TYPES:
            self._dirty[DRIFT].add(event.tenant_id)
            drift = tenant.drift
            late = drift.late_events
            changed = drift.observe(event, partition, offset)
            if drift.late_events != late:
                self.late[DRIFT] += 1
            if changed:
                now = self._now or at
                out += [a.model_copy(update={"fired_at": now}) for a in changed]
        return out

    def tick(self, now: datetime) -> list[Detected]:
        """Close the tenants of partitions idle for `idle_seconds` up to `now`."""
        if self._pending:
            self._materialize()
        out: list[Detected] = []
        minute = int(now.timestamp() // 60)
        for partition in sorted(self.by_partition):
            last = self.last_batch.setdefault(partition, now)  # idle counts from first sight
            if now - last < self.idle or minute <= self.partition_minute.get(partition, -1):
                continue
            self.partition_minute[partition] = minute
            out += self._close_partition(partition, now, now)
        return out

    def _close_partition(self, partition: int, until: datetime, now: datetime) -> list[Detected]:
        out: list[Detected] = []
        for tenant_id in sorted(self.by_partition.get(partition, ())):
            t = self.tenants[tenant_id]
            self._dirty[ANOMALY].add(tenant_id)
            self._dirty[DRIFT].add(tenant_id)
            # One tenant's close raising must not lose the other tenants' scores and alerts
            # of the same close (they were all returned together, or none).
            try:
                anomalies = t.anomaly.close_until(until)
                out += [a.model_copy(update={"fired_at": now}) for a in anomalies]
            except Exception:  # noqa: BLE001 (logged and counted)
                self._close_failed(ANOMALY, tenant_id, until)
            try:
                drift = t.drift.close_until(until)
                out += drift.scores
                out += [a.model_copy(update={"fired_at": now}) for a in drift.alerts]
            except Exception:  # noqa: BLE001 (logged and counted)
                self._close_failed(DRIFT, tenant_id, until)
        return out

    def _close_failed(self, job: str, tenant_id: str, until: datetime) -> None:
        self.failed_closes[job] = self.failed_closes.get(job, 0) + 1
        log.exception("%s: closing tenant %s's windows up to %s failed", job, tenant_id, until)

    def _tenant(self, tenant_id: str, partition: int) -> _Tenant:
        t = self.tenants.get(tenant_id)
        if t is None:
            t = _Tenant(
                partition,
                AnomalyMonitor(tenant_id, self.anomaly_config),
                DriftMonitor(tenant_id, self.drift_config, self.pins),
            )
            self.tenants[tenant_id] = t
            self._apply_model_pins(tenant_id, t)
        else:  # the tenant moved partitions (repartitioning): its state follows it
            self.by_partition.get(t.partition, set()).discard(tenant_id)
            t.partition = partition
        self.by_partition.setdefault(partition, set()).add(tenant_id)
        return t

    # -- pins -----------------------------------------------------------------------------------

    def set_pin(self, pin: Pin, models: Iterable[ModelPin] = ()) -> None:
        """Make a gold-set pin current; `models` pin the served model for ModelVersionChanged."""
        self.pins.pin(pin)
        pinned = self.model_pins.setdefault(pin.tenant_id, {})
        for agent_id, request_model, response_model in models:
            pinned[(agent_id, request_model)] = response_model
        t = self.tenants.get(pin.tenant_id)
        if t is not None:
            self._apply_model_pins(pin.tenant_id, t)

    def _apply_model_pins(self, tenant_id: str, t: _Tenant) -> None:
        models = t.drift.models
        for (agent_id, request_model), response_model in self.model_pins.get(tenant_id, {}).items():
            entry = models.pinned.get(f"{agent_id}|{request_model}")
            if entry is not None and entry[0] == response_model and entry[1]:
                continue  # already pinned: pinning again would forget the models alerted on
            models.pin(agent_id, request_model, response_model)
            self._dirty[DRIFT].add(tenant_id)

    # -- state ----------------------------------------------------------------------------------

    def dirty_states(self) -> list[Write]:
        """(table, key, partition, value) changed since the last call, in write order."""
        writes: list[Write] = []
        for tenant_id in sorted(self._dirty[ANOMALY]):
            t = self.tenants.get(tenant_id)
            if t is not None:
                writes += cp.anomaly_writes(tenant_id, t.partition, t.anomaly, t.book)
        for tenant_id in sorted(self._dirty[DRIFT]):
            t = self.tenants.get(tenant_id)
            if t is not None:
                writes += cp.drift_writes(tenant_id, t.partition, t.drift, t.book)
        self._dirty[ANOMALY].clear()
        self._dirty[DRIFT].clear()
        return writes

    def restore(self, table: str, key: str, value: bytes | dict[str, Any]) -> None:
        """Load one recovered table value; monitors are rebuilt before the next batch or tick."""
        tenant_id, _, part = key.partition("|")
        try:
            doc = orjson.loads(value) if isinstance(value, bytes | bytearray) else value
        except orjson.JSONDecodeError:
            log.warning("skipping an unreadable %s state %r", table, key)
            return
        self._pending.setdefault(tenant_id, {})[(table, part)] = doc

    def retain_partitions(self, assigned: set[int]) -> None:
        """Forget tenants (live or recovered) of partitions this worker no longer owns."""
        self.forget_partitions(set(self.by_partition) - assigned)
        for tenant_id, pieces in list(self._pending.items()):
            if not any(v.get("p") in assigned for v in pieces.values()):
                del self._pending[tenant_id]

    def forget_partitions(self, partitions: set[int]) -> None:
        """Drop the tenants of revoked partitions from memory (their tables keep the state)."""
        for partition in partitions:
            for tenant_id in self.by_partition.pop(partition, set()):
                self.tenants.pop(tenant_id, None)
                self._dirty[ANOMALY].discard(tenant_id)
                self._dirty[DRIFT].discard(tenant_id)
            self.partition_minute.pop(partition, None)
            self.last_batch.pop(partition, None)

    def _materialize(self) -> None:
        pending, self._pending = self._pending, {}
        for tenant_id, pieces in sorted(pending.items()):
            try:
                self._rebuild(tenant_id, pieces)
            except (KeyError, TypeError, ValueError) as exc:  # a state this code cannot read
                log.warning("starting %s's anomaly/drift state afresh: %r", tenant_id, exc)

    def _rebuild(self, tenant_id: str, pieces: cp.Pieces) -> None:
        snapshot = pieces.get((ANOMALY, "")) or pieces.get((DRIFT, ""))
        if snapshot is None:
            return  # live parts without a snapshot: nothing they could extend
        partition = int(snapshot["p"])
        t = self.tenants.pop(tenant_id, None)
        if t is not None:
            self.by_partition.get(t.partition, set()).discard(tenant_id)
        t = self._tenant(tenant_id, partition)
        anomaly = cp.restore_anomaly(pieces, self.anomaly_config, t.book)
        if anomaly is not None:
            t.anomaly = anomaly
            if anomaly.watermark is not None:  # resume the partition watermark where it was
                wm = int(anomaly.watermark.timestamp() // 60)
                self.partition_minute[partition] = max(self.partition_minute.get(partition, -1), wm)
        drift = cp.restore_drift(pieces, self.drift_config, self.pins, t.book)
        if drift is not None:
            t.drift = drift
        self._apply_model_pins(tenant_id, t)
