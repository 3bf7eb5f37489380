"""The stream jobs' heartbeat as the store holds it (`agentaudit.heartbeats`, migration 0017).

The jobs publish a heartbeat on the control topic from their processing loop
(`stream_jobs/heartbeat.py`); the record sink lands each in `agentaudit.heartbeats`. The
newest row says when the jobs were last seen alive *as the store knows it*: behind the
broker by the record sink's flush interval, and frozen when the record sink itself is down
(then `agentaudit status` also sees the sink's lag). The SDK does not read this: it
watches the control topic directly (`producers/control.py`).
"""

from __future__ import annotations

from datetime import UTC, datetime

from agentaudit.store.protocol import Store

HEARTBEATS_TABLE = "agentaudit.heartbeats"


def last_heartbeat(store: Store, source: str = "stream_jobs") -> datetime | None:
    """When `source` last beat (UTC, aware), per the store; None when it never did.

    Store errors reach the caller (a missing table means migration 0017 did not run).
    """
    rows = store.query(
        f"SELECT max(at), count() FROM {HEARTBEATS_TABLE} WHERE source = {{source:String}}",
        {"source": source},
    ).result_rows
    if not rows or not int(rows[0][1]):
        return None  # max() of no rows is 1970-01-01, not "never"
    at = rows[0][0]
    if not isinstance(at, datetime):
        raise TypeError(f"heartbeats.at came back as {type(at).__name__}, not a datetime")
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def heartbeat_age_s(store: Store, now: datetime, source: str = "stream_jobs") -> float | None:
    """Seconds from `source`'s last stored heartbeat to `now`; None when it never beat."""
    last = last_heartbeat(store, source)
    return None if last is None else max(0.0, (now - last).total_seconds())
