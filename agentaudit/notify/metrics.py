"""The delivery counters, prometheus-client objects in the default registry (the worker's
/metrics serves them; names fixed by the on-call contract).

`agentaudit_alert_deliveries_total{receiver,outcome}`, outcomes:
- `delivered`: the receiver answered 2xx (offset committed after it);
- `dead_lettered`: a permanent failure (a 4xx other than 408/429); reason in the counter
  below, the alert on the dead-letter topic, one ERROR line;
- `retried`: one failed attempt that will be tried again (5xx, 408, 429, connection, timeout);
- `duplicate`: an alert id this receiver already handled (a re-published alert) dropped;
- `skipped`: not routed to this receiver; `expired`: older than `max_alert_age_s` when read,
  or still refused (transiently) when it grew that old;
- `failed`: the receiver's loop itself failed (broker gone, a bug); logged with its error and
  restarted with back-off. Receiver `*`: the routing file could not be loaded.
`agentaudit_alert_delivery_pending{receiver}`: messages on the alerts topic this receiver's
group has not handled yet (its lag, as of its last fetch).
`agentaudit_alert_dead_letters_total{receiver,reason}`: dead-lettered alerts by reason
(`http_<status>`).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

DELIVERIES = Counter(
    "agentaudit_alert_deliveries_total",
    "Alerts handled per receiver, by outcome (delivered, dead_lettered, retried, duplicate, "
    "skipped, expired, failed).",
    ["receiver", "outcome"],
)
PENDING = Gauge(
    "agentaudit_alert_delivery_pending",
    "Messages on the alerts topic the receiver's consumer group has not handled yet.",
    ["receiver"],
)
DEAD_LETTERS = Counter(
    "agentaudit_alert_dead_letters_total",
    "Alerts a receiver refused for good (dead-lettered), by reason.",
    ["receiver", "reason"],
)


def count(receiver: str, outcome: str) -> None:
    """+1 on `agentaudit_alert_deliveries_total{receiver, outcome}`."""
    DELIVERIES.labels(receiver=receiver, outcome=outcome).inc()
