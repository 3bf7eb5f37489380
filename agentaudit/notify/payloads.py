"""What each receiver type is sent for one alert: pure functions from `Alert` to JSON bytes.

Every request carries the alert id as its idempotency key: in the `Idempotency-Key` header
for all three, and in the body where the format has room for it (the generic webhook's
`idempotency_key`, Alertmanager's `alert_id` label; Slack shows it in a context line, but
Slack itself cannot use it to drop a resend).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import orjson

from agentaudit.notify.routes import ReceiverConfig
from agentaudit_schemas.records import Alert

SLACK_TEXT_MAX = 3000
"""Slack's limit for a section's text (and what we keep of the fallback `text`)."""


def runbook_url(alert: Alert, base: str) -> str:
    """`base` + the alert's runbook path (runbooks/<Kind>.md); the bare path without a base."""
    return base + alert.runbook if base else alert.runbook


def _ts(alert_time: Any) -> str:
    # RFC 3339 in UTC with millisecond precision: what Alertmanager's API models parse.
    return str(alert_time.isoformat(timespec="milliseconds").replace("+00:00", "Z"))


def _figures(alert: Alert) -> str:
    parts = [f"observed {alert.observed:g}"]
    if alert.limit is not None:
        parts.append(f"limit {alert.limit:g}")
    if alert.baseline is not None:
        parts.append(f"baseline {alert.baseline:g}")
    if alert.score is not None:
        parts.append(f"score {alert.score:.2f}")
    return ", ".join(parts)


def webhook_body(alert: Alert, receiver: str, base: str) -> dict[str, Any]:
    """The generic webhook: the alert as published, its key and its runbook's URL."""
    return {
        "idempotency_key": alert.alert_id,
        "receiver": receiver,
        "runbook_url": runbook_url(alert, base),
        "alert": alert.model_dump(mode="json"),
    }


_SLACK_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_SLACK_TABLE = str.maketrans(_SLACK_ESCAPES)


def _mrkdwn(text: str, limit: int = SLACK_TEXT_MAX) -> str:
    """`text` as Slack mrkdwn shows it literally, at most `limit` characters. Slack reads
    `<!channel>`, `<@U…>` and `<url|label>` in text as mentions and links: a user id is any
    printable ASCII and lands in budget alerts' messages and scope keys, so a user called
    `<!channel>` paged the whole on-call channel. `&`, `<`, `>` are escaped as Slack asks;
    the text is cut before escaping, never inside an escape."""
    escaped = text.translate(_SLACK_TABLE)
    if len(escaped) <= limit:
        return escaped
    kept, size = [], 0
    for char in text:
        shown = _SLACK_ESCAPES.get(char, char)
        if size + len(shown) > limit:
            break
        kept.append(shown)
        size += len(shown)
    return "".join(kept)


def slack_body(alert: Alert, base: str) -> dict[str, Any]:
    """Slack's incoming-webhook payload: `text` (notifications, fallback) and `blocks`."""
    title = f"[{alert.severity.value.upper()}] {alert.kind} · {alert.scope.tenant_id}"
    text = _mrkdwn(f"{title}: {alert.message}", SLACK_TEXT_MAX)
    url = runbook_url(alert, base)
    runbook = f"<{url}|runbook>" if url.startswith(("http://", "https://")) else f"runbook: `{url}`"
    return {
        "text": text,
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": title[:150]}},
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": _mrkdwn(alert.message, SLACK_TEXT_MAX)},
            },
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": f"*Scope*\n`{_mrkdwn(alert.scope.key)}`"},
                    {"type": "mrkdwn", "text": f"*Window*\n{_mrkdwn(alert.window)}"},
                    {"type": "mrkdwn", "text": f"*Figures*\n{_figures(alert)}"},
                    {"type": "mrkdwn", "text": f"*Fired*\n{_ts(alert.fired_at)}"},
                ],
            },
            {
                "type": "context",
                "elements": [
                    {"type": "mrkdwn", "text": f"{runbook} · alert id `{alert.alert_id}`"}
                ],
            },
        ],
    }


def alertmanager_body(
    alert: Alert, resolve_after_s: float, base: str, now: datetime | None = None
) -> list[dict[str, Any]]:
    """Alertmanager v2 `postableAlerts` with one alert.

    Labels identify it (Alertmanager's fingerprint is the label set, so a resend of the same
    alert id merges into the alert it already holds); `alert_id` is a label for that reason.
    startsAt is when it fired; endsAt `resolve_after_s` after it fired or after `now` (the
    post), whichever is later, because nothing ever resolves our alerts (they are events,
    not states) and an alert without endsAt would be resolved by Alertmanager's own
    `resolve_timeout` instead. Counted from `fired_at` alone, an alert posted more than
    `resolve_after_s` late (Alertmanager or the notifier down for an hour, a backlog) arrived
    already resolved: Alertmanager took it (2xx, counted delivered), listed it nowhere and
    notified no one.
    """
    labels = {
        "alertname": alert.kind,
        "tenant": alert.scope.tenant_id,
        "severity": alert.severity.value,
        "scope": alert.scope.key,
        "alert_id": alert.alert_id,
    }
    annotations = {
        "summary": alert.message,
        "description": f"{alert.window}: {_figures(alert)}",
        "runbook_url": runbook_url(alert, base),
    }
    ends = max(alert.fired_at, now or alert.fired_at) + timedelta(seconds=resolve_after_s)
    return [
        {
            "labels": labels,
            "annotations": annotations,
            "startsAt": _ts(alert.fired_at),
            "endsAt": _ts(ends),
        }
    ]


def request_body(
    alert: Alert, receiver: ReceiverConfig, runbook_base: str, now: datetime | None = None
) -> bytes:
    """The JSON bytes posted to `receiver` for `alert` at `now` (the time of the post)."""
    body: Any
    if receiver.type == "slack":
        body = slack_body(alert, runbook_base)
    elif receiver.type == "alertmanager":
        body = alertmanager_body(alert, receiver.resolve_after_s, runbook_base, now)
    else:
        body = webhook_body(alert, receiver.name, runbook_base)
    return orjson.dumps(body)
