"""What the store says about the pipeline's health: last insert, dead-letter rates, the stream
jobs' heartbeat, checkpoint freshness. Plain reads, each a fixed SELECT; `now` is passed in
(tests inject it), never read here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from clickhouse_connect.driver.exceptions import DatabaseError

from agentaudit.store.protocol import Store

WINDOWS_S = {"5m": 300, "1h": 3600}
"""The dead-letter rate windows (name → seconds)."""

_INSERTS_SQL = """
SELECT max(ingested_at), count(), countIf(ingested_at >= {since:DateTime64(6, 'UTC')})
FROM agentaudit.events"""

# The newest insert per partition of the events topic: the sink's partitions are independent
# (one may be stuck, on a frozen sink process or a batch the store refuses, while the others
# flow), so the newest insert overall says nothing about a partition whose events wait.
_PARTITION_INSERTS_SQL = """
SELECT kafka_partition, max(ingested_at) FROM agentaudit.events GROUP BY kafka_partition"""

_DEAD_LETTERS_SQL = """
SELECT reason, countIf(received_at >= {t5m:DateTime64(6, 'UTC')}), count()
FROM agentaudit.dead_letters WHERE received_at >= {t1h:DateTime64(6, 'UTC')}
GROUP BY reason ORDER BY reason"""

# Per chain (tenant, partition): its newest checkpoint, unless that is an end marker (an
# off-boarded tenant's chain is never signed again, on purpose); chains with rows and no
# checkpoint at all count as never signed.
_CHECKPOINTS_SQL = """
SELECT tenant_id, kafka_partition, max(signed_at), argMax(is_end, (tree_size, signed_at))
FROM agentaudit.checkpoints GROUP BY tenant_id, kafka_partition"""
_CHAINS_SQL = "SELECT DISTINCT tenant_id, kafka_partition FROM agentaudit.events"


def _utc(value: Any) -> datetime:
    assert isinstance(value, datetime), type(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass(frozen=True)
class Inserts:
    last: datetime | None
    """Newest `ingested_at` in `events` (None: the store holds no event)."""
    total: int
    recent: int
    """Events ingested in the last 5 minutes."""
    by_partition: dict[int, datetime] | None = None
    """Newest `ingested_at` per Kafka partition of the events topic (a partition with no stored
    event is absent); None: not read."""


@dataclass(frozen=True)
class DeadLetterRate:
    reason: str
    last_5m: int
    last_1h: int


@dataclass(frozen=True)
class Checkpoints:
    chains: int
    """Chains judged (ended chains left out)."""
    stalest: tuple[str, int] | None
    """(tenant, partition) of the chain whose newest checkpoint is oldest."""
    stalest_at: datetime | None
    """Its newest checkpoint's time; None with `stalest` set: that chain was never signed."""


@dataclass(frozen=True)
class Heartbeat:
    known: bool
    """False: no heartbeat table (migration 0017 not applied, or no heartbeat module)."""
    last: datetime | None = None


@dataclass(frozen=True)
class StoreFigures:
    inserts: Inserts
    dead_letters: list[DeadLetterRate] = field(default_factory=list)
    heartbeat: Heartbeat = Heartbeat(False)
    checkpoints: Checkpoints | None = None
    """None: the trail is unsigned (AGENTAUDIT_CHECKPOINT_INTERVAL_S=0)."""


def inserts(store: Store, now: datetime) -> Inserts:
    since = now - timedelta(seconds=WINDOWS_S["5m"])
    last, total, recent = store.query(_INSERTS_SQL, {"since": since}).result_rows[0]
    rows = store.query(_PARTITION_INSERTS_SQL).result_rows if int(total) else []
    by_partition = {int(p): _utc(at) for p, at in rows}
    return Inserts(_utc(last) if int(total) else None, int(total), int(recent), by_partition)


def dead_letter_rates(store: Store, now: datetime) -> list[DeadLetterRate]:
    params = {f"t{name}": now - timedelta(seconds=s) for name, s in WINDOWS_S.items()}
    rows = store.query(_DEAD_LETTERS_SQL, params).result_rows
    return [DeadLetterRate(str(r), int(a), int(b)) for r, a, b in rows]


def heartbeat(store: Store) -> Heartbeat:
    """The stream jobs' last heartbeat, through `agentaudit.health.heartbeat` when it exists
    (imported here, not at the top: it is another part's module and may be absent)."""
    try:
        module = importlib.import_module("agentaudit.health.heartbeat")
    except ImportError:
        return Heartbeat(False)
    try:
        return Heartbeat(True, module.last_heartbeat(store, source="stream_jobs"))
    except DatabaseError as exc:
        if "UNKNOWN_TABLE" in str(exc) or "doesn't exist" in str(exc):
            return Heartbeat(False)
        raise


def checkpoints(store: Store) -> Checkpoints:
    newest: dict[tuple[str, int], datetime | None] = {
        (str(t), int(p)): None for t, p in store.query(_CHAINS_SQL).result_rows
    }
    for tenant, partition, at, is_end in store.query(_CHECKPOINTS_SQL).result_rows:
        key = (str(tenant), int(partition))
        if is_end:
            newest.pop(key, None)
        else:
            newest[key] = _utc(at)
    if not newest:
        return Checkpoints(0, None, None)
    never = sorted(k for k, at in newest.items() if at is None)
    if never:
        return Checkpoints(len(newest), never[0], None)
    chain = min(newest, key=lambda k: (newest[k], k))
    return Checkpoints(len(newest), chain, newest[chain])


def store_figures(store: Store, now: datetime, *, signed: bool) -> StoreFigures:
    """Every store figure at `now`; `signed`: whether checkpoints are expected at all."""
    return StoreFigures(
        inserts(store, now),
        dead_letter_rates(store, now),
        heartbeat(store),
        checkpoints(store) if signed else None,
    )
