"""`agentaudit status`: the pipeline's health judged against thresholds, one verdict and an exit
code a script can trust.

`gather` reads (broker, store); `judge` is pure (figures + settings + `now` → checks), so the
thresholds are unit-tested without a broker or a store. Exit codes: 0 healthy, 1 degraded
(something stale or behind), 3 broker unreachable, 4 store unavailable (both: 3), the CLI's
codes (README "CLI").
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from clickhouse_connect.driver.exceptions import DatabaseError

from agentaudit.errors import BrokerUnreachable, StoreUnavailable
from agentaudit.health.figures import Inserts, StoreFigures, store_figures
from agentaudit.health.lag import Lag, quiet_kafka_logs, read_lag
from agentaudit.settings import Settings

HEALTHY, DEGRADED = 0, 1


class State(StrEnum):
    ok = "ok"
    degraded = "degraded"
    unknown = "unknown"
    error = "error"


@dataclass(frozen=True)
class Check:
    name: str
    state: State
    detail: str


@dataclass
class Observed:
    """Everything `status` read; None where it could not read (the error says why)."""

    now: datetime
    owner: str | None
    """Who serves the store: 'pid N' (embedded, a live worker or demo), 'server', or None."""
    lags: list[Lag] | None = None
    broker_error: str | None = None
    figures: StoreFigures | None = None
    store_error: str | None = None


@dataclass
class Report:
    now: datetime
    checks: list[Check]
    observed: Observed
    exit_code: int = field(init=False)

    def __post_init__(self) -> None:
        states = {c.name: c.state for c in self.checks}
        if states.get("broker") is State.error:
            self.exit_code = BrokerUnreachable.exit_code
        elif states.get("store") is State.error:
            self.exit_code = StoreUnavailable.exit_code
        elif State.degraded in states.values():
            self.exit_code = DEGRADED
        else:
            self.exit_code = HEALTHY

    @property
    def verdict(self) -> str:
        return {HEALTHY: "healthy", DEGRADED: "degraded"}.get(self.exit_code, "error")


def _age(now: datetime, then: datetime) -> float:
    return max(0.0, (now - then).total_seconds())


def sink_lag(lags: list[Lag], settings: Settings) -> int:
    """Messages on the events topic the event sink has not committed yet."""
    return sum(
        x.lag
        for x in lags
        if x.group == settings.consumer_group and x.topic == settings.events_topic
    )


def writer_check(settings: Settings, seen: Observed) -> Check:
    """Is the store's writer taking what the topic holds? Down: events wait (sink lag) while
    no process owns the embedded store, or no insert landed for `health_max_insert_age_s`;
    stuck: the same for one partition while others flow."""
    if seen.figures is None or seen.lags is None:
        return Check("writer", State.unknown, "needs both the broker and the store")
    waiting = sink_lag(seen.lags, settings)
    last = seen.figures.inserts.last
    limit = settings.health_max_insert_age_s
    since = "never" if last is None else f"{_age(seen.now, last):.1f} s ago"
    if waiting and seen.owner is None:
        return Check(
            "writer",
            State.degraded,
            f"down: no worker serves the store and {waiting} events wait on the topic",
        )
    if waiting and (last is None or _age(seen.now, last) > limit):
        return Check(
            "writer",
            State.degraded,
            f"down: {waiting} events wait, last insert {since} (max {limit:g} s)",
        )
    stuck = _stuck_partition(settings, seen)
    if stuck is not None:
        return Check("writer", State.degraded, stuck)
    who = seen.owner or "no worker serves the store"
    return Check("writer", State.ok, f"{who}; last insert {since}; {waiting} events wait")


def _stuck_partition(settings: Settings, seen: Observed) -> str | None:
    """A partition of the events topic whose events wait while nothing from it was stored for
    `health_max_insert_age_s` (the newest insert overall is another partition's when one
    partition stalls and the others flow); None when every waiting partition moves."""
    assert seen.figures is not None and seen.lags is not None
    stuck = stuck_partitions(settings, seen.lags, seen.figures.inserts, seen.now)
    if not stuck:
        return None
    x, last = stuck[0]
    limit = settings.health_max_insert_age_s
    since = "never" if last is None else f"{_age(seen.now, last):.1f} s ago"
    return (
        f"partition {x.partition} stuck: {x.lag} events wait on {x.topic}"
        f"[{x.partition}], last insert from it {since} (max {limit:g} s)"
    )


def stuck_partitions(
    settings: Settings, lags: list[Lag], inserts: Inserts, now: datetime
) -> list[tuple[Lag, datetime | None]]:
    """The event sink's partitions whose events wait while nothing from them was stored for
    `health_max_insert_age_s`, each with its newest insert (None: never); `status` and the
    worker's /metrics (`agentaudit_sink_stuck_partitions`) judge with this."""
    if inserts.by_partition is None:
        return []
    limit = settings.health_max_insert_age_s
    out: list[tuple[Lag, datetime | None]] = []
    for x in lags:
        if x.group != settings.consumer_group or x.topic != settings.events_topic or not x.lag:
            continue
        last = inserts.by_partition.get(x.partition)
        if last is None or _age(now, last) > limit:
            out.append((x, last))
    return out


def judged_lags(settings: Settings, lags: list[Lag]) -> list[Lag]:
    """The lags to judge: without the stream jobs' group when the jobs are off here
    (AGENTAUDIT_STREAM_JOBS=false) and that group never committed an offset, i.e. no jobs run
    anywhere. Its lag then counts the whole topic, which is no one falling behind (and paged
    ConsumerLag for ever past 10,000 events); jobs run apart (`agentaudit jobs`) commit, and
    stay judged."""
    if settings.stream_jobs:
        return lags
    jobs = [x for x in lags if x.group == settings.jobs_group]
    if any(x.committed is not None for x in jobs):
        return lags
    return [x for x in lags if x.group != settings.jobs_group]


def _lag_check(settings: Settings, lags: list[Lag]) -> Check:
    worst: dict[str, int] = {}
    for x in judged_lags(settings, lags):
        worst[x.group] = max(worst.get(x.group, 0), x.lag)
    text = ", ".join(f"{g} {n}" for g, n in worst.items()) or "no pipeline topic yet"
    behind = [g for g, n in worst.items() if n > settings.health_max_lag]
    state = State.degraded if behind else State.ok
    return Check("lag", state, f"max per partition: {text} (max {settings.health_max_lag})")


def _dead_letter_check(settings: Settings, figures: StoreFigures) -> Check:
    five = sum(d.last_5m for d in figures.dead_letters)
    hour = sum(d.last_1h for d in figures.dead_letters)
    rows = five + figures.inserts.recent
    ratio = five / rows if rows else 0.0
    reasons = ", ".join(f"{d.reason} {d.last_5m}/{d.last_1h}" for d in figures.dead_letters)
    detail = f"5 min {five} ({ratio:.1%} of rows), 1 h {hour}" + (f"; {reasons}" if reasons else "")
    bad = ratio > settings.health_max_dead_letter_ratio
    return Check(
        "dead letters",
        State.degraded if bad else State.ok,
        detail + f" (max {settings.health_max_dead_letter_ratio:.1%})",
    )


def _heartbeat_check(settings: Settings, now: datetime, figures: StoreFigures) -> Check:
    beat, limit = figures.heartbeat, settings.health_max_heartbeat_age_s
    if not beat.known:
        return Check("heartbeat", State.unknown, "unknown (no heartbeat table)")
    if beat.last is None:
        state = State.degraded if settings.stream_jobs else State.ok
        return Check("heartbeat", state, "stream jobs never beat")
    # A stale beat is degraded whether or not this worker runs the jobs: jobs that beat run
    # somewhere (`agentaudit jobs` beside a worker with AGENTAUDIT_STREAM_JOBS=false), and
    # their silence is what the StreamJobsSilent rule pages on.
    age = _age(now, beat.last)
    state = State.degraded if age > limit else State.ok
    return Check("heartbeat", state, f"stream jobs last beat {age:.1f} s ago (max {limit:g} s)")


def _checkpoint_check(settings: Settings, now: datetime, figures: StoreFigures) -> Check:
    cp, limit = figures.checkpoints, settings.health_max_checkpoint_age_s
    if cp is None:
        return Check("checkpoints", State.ok, "off (unsigned trail)")
    if cp.stalest is None:
        return Check("checkpoints", State.ok, "no chain yet")
    chain = f"{cp.stalest[0]}/p{cp.stalest[1]}"
    if cp.stalest_at is None:
        return Check("checkpoints", State.degraded, f"{chain} never signed ({cp.chains} chains)")
    age = _age(now, cp.stalest_at)
    state = State.degraded if age > limit else State.ok
    return Check(
        "checkpoints",
        state,
        f"stalest {chain} signed {age:.1f} s ago ({cp.chains} chains, max {limit:g} s)",
    )


def judge(settings: Settings, seen: Observed) -> Report:
    """The checks, in the order a person reads them."""
    checks: list[Check] = []
    if seen.broker_error is not None:
        checks.append(Check("broker", State.error, seen.broker_error))
    else:
        checks.append(Check("broker", State.ok, settings.kafka_bootstrap))
    if seen.store_error is not None:
        checks.append(Check("store", State.error, seen.store_error))
    else:
        checks.append(
            Check("store", State.ok, "embedded chDB" if settings.embedded else "ClickHouse server")
        )
    checks.append(writer_check(settings, seen))
    checks.append(
        _lag_check(settings, seen.lags)
        if seen.lags is not None
        else Check("lag", State.unknown, "broker unreachable")
    )
    figures = seen.figures
    if figures is None:
        checks += [
            Check(n, State.unknown, "store unavailable")
            for n in ("dead letters", "heartbeat", "checkpoints")
        ]
    else:
        checks += [
            _dead_letter_check(settings, figures),
            _heartbeat_check(settings, seen.now, figures),
            _checkpoint_check(settings, seen.now, figures),
        ]
    return Report(seen.now, checks, seen)


def store_owner(settings: Settings) -> str | None:
    """Who writes the store: a live embedded owner's pid, 'server' in server mode, else None."""
    if not settings.embedded:
        return "server"
    from agentaudit.store.embedded import read_live_endpoint

    live = read_live_endpoint(settings)
    return None if live is None else f"pid {live.pid} serves the store"


STORE_TIMEOUT_S = 30
"""How long status waits for the store's answers. The embedded store runs a few reads at a time:
behind long queries status waited for them (up to the client's 300 s) and then said 'store ok'."""


def gather(
    settings: Settings,
    now: datetime,
    *,
    broker_timeout_s: float = 5.0,
    store_timeout_s: int = STORE_TIMEOUT_S,
) -> Observed:
    """Read the broker and the store; each one's failure is recorded, not raised."""
    from agentaudit.store import open_store, store_exists

    seen = Observed(now, store_owner(settings))  # before opening: a reader may become the owner
    with quiet_kafka_logs():
        try:
            seen.lags = asyncio.run(read_lag(settings, broker_timeout_s))
        except BrokerUnreachable as exc:
            seen.broker_error = str(exc)
    try:
        if settings.embedded and not store_exists(settings):
            raise StoreUnavailable(f"no store at {settings.store_dir} (AGENTAUDIT_DATA_DIR)")
        with open_store(settings, timeout=store_timeout_s) as store:
            seen.figures = store_figures(store, now, signed=settings.checkpoint_interval_s > 0)
    except StoreUnavailable as exc:
        seen.store_error = str(exc)
    except DatabaseError as exc:  # e.g. migrations not applied: the store cannot answer
        seen.store_error = "the store refused a health read: " + " ".join(str(exc).split())[:300]
    return seen


def to_json(report: Report) -> dict[str, Any]:
    """The report as plain JSON values (times ISO 8601 UTC)."""
    seen = report.observed

    def clean(value: Any) -> Any:
        if isinstance(value, datetime):
            return value.isoformat()
        if isinstance(value, dict):
            return {str(k): clean(v) for k, v in value.items()}  # JSON keys: partitions too
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        return value

    figures = asdict(seen.figures) if seen.figures is not None else None
    return clean(
        {
            "status": report.verdict,
            "exit_code": report.exit_code,
            "now": report.now,
            "checks": [
                {"name": c.name, "state": c.state.value, "detail": c.detail} for c in report.checks
            ],
            "owner": seen.owner,
            "lag": [asdict(x) for x in seen.lags] if seen.lags is not None else None,
            "store": figures,
        }
    )


def to_text(report: Report) -> list[str]:
    """The report as lines for a terminal: verdict, one line per check, lag per partition."""
    head = f"agentaudit status at {report.now.isoformat(timespec='seconds')}: "
    lines = [head + f"{report.verdict.upper()} (exit {report.exit_code})"]
    for c in report.checks:
        mark = c.state.value if c.state is State.ok else c.state.value.upper()
        lines.append(f"  {c.name:<13} {mark:<9} {c.detail}")
    lags = report.observed.lags
    if lags:
        lines.append("lag per partition (group topic[partition]: end - committed = lag):")
        for x in lags:
            committed = "-" if x.committed is None else str(x.committed)
            lines.append(f"  {x.group} {x.topic}[{x.partition}]: {x.end} - {committed} = {x.lag}")
    return lines
