"""Checkpoints of the anomaly and drift monitors: a snapshot, plus a small live part per batch.

Why not the whole state after every batch, as spend and breakers do: a tenant's anomaly
state is ~12 kB per series (120 trailing minutes × 8 metrics) and its drift state holds the
behaviour references, ~0.7 ms each to build (measured: 48 kB for a tenant with three agents),
while what one event changes is tiny — the open minute or window, the applied offsets, a
few counters. So each monitor is stored under two keys of its table, both in the tenant's
changelog partition:

- `<tenant>`: the snapshot, `{"p": partition, "seq": n, "state": full state}`, written when
  the slow part changed (`shape` differs: a minute or window closed, a series or agent
  appeared), i.e. about once a minute per tenant;
- `<tenant>|live`: `{"p": partition, "base": n, "live": fast part}`, after every batch that
  touched the tenant, naming the snapshot it extends.

Restore merges the live part into the snapshot when `base == seq` (`merge_*`), else uses the
snapshot alone. A batch writes snapshot then live, to one partition of one topic, so a crash
loses a suffix of the writes but never reorders them: the restored state is always the
state at the end of some batch, and the batches after it were not acknowledged, so they are
replayed (the monitors skip offsets they already applied).

The functions read the monitors' public attributes and the key names of their `to_state`
documents; `tests/unit/stream_jobs/test_checkpoint.py` checks that a merge rebuilds exactly
the state the live monitor has, so a change of either monitor's state shows up there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from stream_jobs.anomaly.config import AnomalyConfig
from stream_jobs.anomaly.monitor import AnomalyMonitor
from stream_jobs.drift.config import DriftConfig
from stream_jobs.drift.monitor import DriftMonitor
from stream_jobs.drift.pins import PinRegistry

ANOMALY, DRIFT = "anomaly", "drift"
"""Table names; a key is `<tenant>` (snapshot), `<tenant>|live` or `<tenant>|profiles`."""
LIVE, PROFILES = "live", "profiles"
Shape = tuple[Any, ...]
Write = tuple[str, str, int, bytes]
"""(table, key, partition, JSON value)."""
Pieces = dict[tuple[str, str], dict[str, Any]]
"""A tenant's recovered values by (table, key suffix: "", LIVE or PROFILES)."""


MinuteCache = dict[tuple[str, int], tuple[tuple[float, ...], list[Any]]]
"""(series, minute) → (fingerprint, encoded accumulator) of the open minutes last written."""


@dataclass
class Book:
    """A tenant's checkpoint bookkeeping between writes."""

    seq: dict[str, int] = field(default_factory=lambda: {ANOMALY: 0, DRIFT: 0})
    shape: dict[str, Shape | None] = field(default_factory=lambda: {ANOMALY: None, DRIFT: None})
    """Shape at the last snapshot; a different one means the next write is a snapshot."""
    profiles_hour: int | None = None
    minutes: MinuteCache = field(default_factory=dict)
    """Encodings of the open minutes last written (see `anomaly_live`)."""


def anomaly_writes(tenant_id: str, partition: int, m: AnomalyMonitor, book: Book) -> list[Write]:
    """The anomaly table values to write after a batch that touched the tenant, in order."""
    p, writes = partition, []
    if m.profiles_hour != book.profiles_hour:  # hourly; before the snapshot that needs it
        book.profiles_hour = m.profiles_hour
        writes.append(
            (ANOMALY, f"{tenant_id}|{PROFILES}", p, encode({"p": p, "state": m.profiles_state()}))
        )
    shape = anomaly_shape(m)
    if shape != book.shape[ANOMALY]:
        book.shape[ANOMALY], book.seq[ANOMALY] = shape, book.seq[ANOMALY] + 1
        snapshot = {"p": p, "seq": book.seq[ANOMALY], "state": m.to_state(profiles=False)}
        writes.append((ANOMALY, tenant_id, p, encode(snapshot)))
    live = {"p": p, "base": book.seq[ANOMALY], "live": anomaly_live(m, book.minutes)}
    writes.append((ANOMALY, f"{tenant_id}|{LIVE}", p, encode(live)))
    return writes


def drift_writes(tenant_id: str, partition: int, m: DriftMonitor, book: Book) -> list[Write]:
    p, writes = partition, []
    shape = drift_shape(m)
    if shape != book.shape[DRIFT]:
        book.shape[DRIFT], book.seq[DRIFT] = shape, book.seq[DRIFT] + 1
        writes.append(
            (DRIFT, tenant_id, p, encode({"p": p, "seq": book.seq[DRIFT], "state": m.to_state()}))
        )
    live = {"p": p, "base": book.seq[DRIFT], "live": drift_live(m)}
    writes.append((DRIFT, f"{tenant_id}|{LIVE}", p, encode(live)))
    return writes


def restore_anomaly(pieces: Pieces, config: AnomalyConfig, book: Book) -> AnomalyMonitor | None:
    """The monitor the recovered values describe (None without a snapshot); fills `book`."""
    snapshot = pieces.get((ANOMALY, ""))
    if snapshot is None:
        return None
    state = _merged(snapshot, pieces.get((ANOMALY, LIVE)), merge_anomaly)
    profiles = pieces.get((ANOMALY, PROFILES))
    m = AnomalyMonitor.from_state(state, config, profiles["state"] if profiles else None)
    book.seq[ANOMALY], book.shape[ANOMALY] = int(snapshot["seq"]), anomaly_shape(m)
    book.profiles_hour = m.profiles_hour
    return m


def restore_drift(
    pieces: Pieces, config: DriftConfig, pins: PinRegistry, book: Book
) -> DriftMonitor | None:
    snapshot = pieces.get((DRIFT, ""))
    if snapshot is None:
        return None
    state = _merged(snapshot, pieces.get((DRIFT, LIVE)), merge_drift)
    m = DriftMonitor.from_state(state, config, pins)
    book.seq[DRIFT], book.shape[DRIFT] = int(snapshot["seq"]), drift_shape(m)
    return m


def _merged(snapshot: dict[str, Any], live: dict[str, Any] | None, merge: Any) -> dict[str, Any]:
    state: dict[str, Any] = snapshot["state"]
    if live is None or live.get("base") != snapshot["seq"]:
        return state
    merged: dict[str, Any] | None = merge(state, live["live"])
    return state if merged is None else merged


def anomaly_shape(m: AnomalyMonitor) -> Shape:
    """Changes exactly when something outside the live part changed (see module doc)."""
    return tuple((k, s.closed_until) for k, s in m.series.items())


def anomaly_live(m: AnomalyMonitor, cache: MinuteCache | None = None) -> dict[str, Any]:
    """What `observe` changes: offsets, watermark, counters, each series' open minutes.

    With a `cache` (one per monitor, kept between calls), an open minute no event reached
    since the last call reuses its encoding: only the current minute of a series changes,
    while the two before it wait out the grace period.
    """
    seen: MinuteCache = {}
    series: dict[str, Any] = {}
    for key, s in m.series.items():
        open_ = []
        for minute, acc in s.open.items():
            # Every event `MinuteAcc.add` counts moves one of these (or costs something).
            mark = (
                acc.n_llm,
                acc.n_tool,
                acc.n_policy,
                acc.n_guardrail,
                acc.n_error_events,
                acc.approval_latency.n,
                acc.spend,
            )
            hit = cache.get((key, minute)) if cache is not None else None
            encoded = hit[1] if hit is not None and hit[0] == mark else acc.to_state()
            seen[(key, minute)] = (mark, encoded)
            open_.append([minute, encoded])
        series[key] = {
            "open": open_,
            "closed_until": s.closed_until,
            "first": s.first_minute,
            "last_event": s.last_event_minute,
        }
    if cache is not None:
        cache.clear()
        cache.update(seen)
    return {
        "offsets": m.guard.to_state(),
        "watermark": None if m.watermark is None else m.watermark.isoformat(),
        "counters": [m.late_events, m.dropped_events, m.untracked_agent_events],
        "series": series,
    }


def merge_anomaly(snapshot: dict[str, Any], live: dict[str, Any]) -> dict[str, Any] | None:
    """The snapshot with the live part applied; None when the live part does not extend it."""
    series = snapshot["series"]
    if set(series) != set(live["series"]):
        return None
    for key, part in live["series"].items():
        closed = series[key]["closed_until"]
        if closed is not None and closed != part["closed_until"]:
            return None
    return {
        **snapshot,
        "offsets": live["offsets"],
        "watermark": live["watermark"],
        "counters": live["counters"],
        "series": {k: {**s, **live["series"][k]} for k, s in series.items()},
    }


def drift_shape(m: DriftMonitor) -> Shape:
    return (m.closed_until, tuple(m.behaviour))


def drift_live(m: DriftMonitor) -> dict[str, Any]:
    """What `observe` changes: offsets, eval windows, open behaviour windows, served models.

    The parts share lists with the live objects: encode the result before the next event.
    """
    return {
        "offsets": m.guard.to_state(),
        "closed_until": m.closed_until,
        "evals": m.evals.to_state(),
        "models": m.models.to_state(),
        "versions": m.versions,
        "counters": [m.late_events, m.untracked_agent_events, m.dropped_events],
        "open": {a: [[w, s.to_state()] for w, s in b.open.items()] for a, b in m.behaviour.items()},
    }


def merge_drift(snapshot: dict[str, Any], live: dict[str, Any]) -> dict[str, Any] | None:
    behaviour = snapshot["behaviour"]
    if set(behaviour) != set(live["open"]):
        return None
    if snapshot["closed_until"] is not None and snapshot["closed_until"] != live["closed_until"]:
        return None
    fast = ("offsets", "closed_until", "evals", "models", "versions", "counters")
    return {
        **snapshot,
        **{k: live[k] for k in fast},
        "behaviour": {a: {**b, "open": live["open"][a]} for a, b in behaviour.items()},
    }


def encode(doc: dict[str, Any]) -> bytes:
    """The table value: JSON bytes, immutable once made (the monitors' states share lists
    with live objects, so a dict value could change after it was written)."""
    return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
