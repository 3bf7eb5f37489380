"""`agentaudit query`'s staleness warning: one line on stderr, never in the result, when the
answer may come from a store that is not keeping up.

Down: events wait on the topic (the event sink's lag) while no worker serves the embedded
store, or no insert landed for `health_max_insert_age_s`. Behind: a group's lag is above
`health_max_lag`. A broker that does not answer is said too: then nobody can tell. The same
judgement as `agentaudit status` (`agentaudit.health.status.writer_check`).
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from agentaudit.errors import BrokerUnreachable
from agentaudit.health.figures import StoreFigures, inserts
from agentaudit.health.lag import Lag, quiet_kafka_logs, read_lag
from agentaudit.health.status import Observed, State, writer_check
from agentaudit.settings import Settings
from agentaudit.store.protocol import Store

BROKER_TIMEOUT_S = 2.0
"""A query waits at most this long for the broker before answering (with the warning)."""


def judge_staleness(settings: Settings, seen: Observed) -> str | None:
    """The warning for what was observed, or None when the store is current (pure)."""
    if seen.broker_error is not None:
        return f"cannot tell whether the store is current: {seen.broker_error}"
    writer = writer_check(settings, seen)
    if writer.state is State.degraded:
        return f"the store's writer is {writer.detail}; this answer may be stale"
    behind = [x for x in seen.lags or [] if x.lag > settings.health_max_lag]
    if behind:
        worst = max(behind, key=lambda x: x.lag)
        return (
            f"the pipeline is behind: {worst.group} lags {worst.lag} messages on "
            f"{worst.topic}[{worst.partition}] (max {settings.health_max_lag}); this answer "
            "may be stale"
        )
    return None


def staleness_warning(
    settings: Settings, store: Store, now: datetime, owner: str | None
) -> str | None:
    """Read lag and the last insert, then judge; None when the store is current. `owner`:
    `store_owner(settings)` read *before* the store was opened (opening an unowned embedded
    store makes the reader its owner)."""
    seen = Observed(now, owner)
    seen.figures = StoreFigures(inserts(store, now))
    with quiet_kafka_logs():
        try:
            seen.lags = _lags(settings)
        except BrokerUnreachable as exc:
            seen.broker_error = str(exc)
    return judge_staleness(settings, seen)


def _lags(settings: Settings) -> list[Lag]:
    return asyncio.run(read_lag(settings, BROKER_TIMEOUT_S))
