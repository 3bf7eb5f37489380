"""The sweep's clock, checked against a second one before anything is deleted.

Retention deletes by age, and a delete cannot be undone: a host clock that steps ahead (a bad
NTP source, a VM restored from a snapshot, a mistyped `date`) made a sweep delete every row
up to the newest checkpoint below each chain's head, months of trail still under retention.
In embedded mode the sink, the signer and the sweep share that one clock, so it cannot check
itself. The trail holds another: the events' `occurred_at`, stamped by the agents' clocks on
other machines (and bounded by them: the sink dead-letters an event more than
`max_clock_skew_s` after its Kafka record). The median `occurred_at` of the newest stored
events is a clock no single agent can move.

A sweep cuts as of min(host now, witness + `retention_clock_tolerance_s`). A host clock ahead
of the trail by more than the tolerance is refused for the part beyond it, logged and reported
(a clock behind is harmless: retention then deletes less). The same holds after a long pause
in traffic or a backfill of old events, where the newest events are old although the clock is
right: retention waits for traffic, or for an operator who vouches for the clock
(`agentaudit retention apply --trust-clock`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from agentaudit.store.protocol import Store
from agentaudit.system_events import AGENT_ID

log = logging.getLogger(__name__)

WITNESSES = 1001
"""How many of the newest events (by `ingested_at`) the median is taken over."""

# Not the pipeline's own events (`agent_id` 'agentaudit': auditor_query, retention_applied,
# retention_changed, subject_erased…): they are stamped by this host's clock, the one being
# checked. Before, an auditor running queries over many tenants (one auditor_query event per
# tenant and statement) filled the newest 1,001 with the host's time and the check passed a
# clock months ahead; and each sweep's retention_applied events, dated at the cut time, moved
# the witness on by the tolerance per sweep on a quiet trail.
_WITNESS_SQL = f"""
SELECT count(), quantileExact(0.5)(toUnixTimestamp64Micro(occurred_at)) FROM (
    SELECT occurred_at FROM agentaudit.events WHERE agent_id != '{AGENT_ID}'
    ORDER BY ingested_at DESC LIMIT {WITNESSES}
)"""


@dataclass(frozen=True)
class SweepTime:
    """The instant a sweep cuts as of, and, when the host clock was not trusted, why."""

    at: datetime
    refused: str = ""


def trail_witness(store: Store) -> datetime | None:
    """The median `occurred_at` of the newest stored events of agents (none of the pipeline's
    own); None when there is none."""
    count, micros = store.query(_WITNESS_SQL).result_rows[0]
    if not int(count):
        return None
    return datetime.fromtimestamp(int(micros) / 1e6, UTC)


def sweep_time(store: Store, host_now: datetime, tolerance_s: float | None) -> SweepTime:
    """`checked_time` against this store's trail (None: the clock is vouched for)."""
    if tolerance_s is None:
        return SweepTime(host_now)
    return checked_time(host_now, trail_witness(store), tolerance_s)


def checked_time(host_now: datetime, witness: datetime | None, tolerance_s: float) -> SweepTime:
    """`host_now`, unless it runs ahead of `witness` by more than `tolerance_s`: then the
    witness plus the tolerance, and why. No witness (nothing stored): `host_now`."""
    if witness is None:  # nothing stored, so nothing to delete either
        return SweepTime(host_now)
    bound = witness + timedelta(seconds=tolerance_s)
    if host_now <= bound:
        return SweepTime(host_now)
    refused = (
        f"the host clock ({host_now.isoformat(timespec='seconds')}) is "
        f"{_span(host_now - witness)} ahead of the trail's newest events (median occurred_at "
        f"{witness.isoformat(timespec='seconds')}): cut as of "
        f"{bound.isoformat(timespec='seconds')}; if the clock is right (a backfill or a pause "
        "in traffic), run `agentaudit retention apply --trust-clock`"
    )
    log.warning("retention: %s", refused)
    return SweepTime(bound, refused)


def _span(delta: timedelta) -> str:
    days, seconds = delta.days, delta.seconds
    return (
        f"{days} days {seconds // 3600} h"
        if days
        else f"{seconds // 3600} h {seconds // 60 % 60} min"
    )
