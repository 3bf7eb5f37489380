"""What each receiver type is sent."""

from __future__ import annotations

from datetime import timedelta

import orjson

from agentaudit.notify.payloads import request_body
from agentaudit.notify.routes import parse_routes
from agentaudit_schemas.records import Scope
from tests.unit.notify.alerts import make_alert

ROUTES = parse_routes("""
receivers:
  - {name: hook, type: webhook, url: "http://h:1/x"}
  - {name: slack, type: slack, url: "https://hooks.example/services/T/B/C"}
  - {name: am, type: alertmanager, url: "http://h:9093", resolve_after_s: 7200}
routes: [{receiver: hook}]
runbook_base_url: "https://git.example/agentaudit/blob/main/"
""")


def _body(name: str) -> object:
    return orjson.loads(request_body(make_alert(), ROUTES.receiver(name), ROUTES.runbook_base_url))


def test_webhook_carries_the_alert_and_its_key() -> None:
    alert = make_alert()
    body = _body("hook")
    assert isinstance(body, dict)
    assert body["idempotency_key"] == alert.alert_id
    assert body["alert"] == orjson.loads(alert.model_dump_json())
    assert (
        body["runbook_url"] == "https://git.example/agentaudit/blob/main/runbooks/BudgetExceeded.md"
    )


def test_alertmanager_v2_postable_alert() -> None:
    alert = make_alert()
    body = _body("am")
    assert isinstance(body, list) and len(body) == 1
    (am,) = body
    assert am["labels"] == {
        "alertname": "BudgetExceeded",
        "tenant": "acme",
        "severity": "critical",
        "scope": "tenant=acme/agent=support-bot",
        "alert_id": alert.alert_id,
    }
    assert am["annotations"]["summary"] == alert.message
    assert am["annotations"]["runbook_url"].endswith("runbooks/BudgetExceeded.md")
    assert am["startsAt"] == "2026-03-01T12:00:00.000Z"
    assert am["endsAt"] == "2026-03-01T14:00:00.000Z"  # fired_at + resolve_after_s
    assert set(am) == {"labels", "annotations", "startsAt", "endsAt"}


def test_slack_text_and_blocks() -> None:
    body = _body("slack")
    assert isinstance(body, dict)
    assert body["text"].startswith("[CRITICAL] BudgetExceeded · acme: acme spent")
    types = [b["type"] for b in body["blocks"]]
    assert types == ["header", "section", "section", "context"]
    assert len(body["blocks"][0]["text"]["text"]) <= 150
    context = body["blocks"][3]["elements"][0]["text"]
    assert (
        "<https://git.example/agentaudit/blob/main/runbooks/BudgetExceeded.md|runbook>" in context
    )
    assert make_alert().alert_id in context


def test_alertmanager_end_counts_from_the_post_when_that_is_later() -> None:
    """Posted two hours after it fired (Alertmanager or the notifier down, a backlog), an
    alert whose endsAt is fired_at + resolve_after_s arrives resolved: Alertmanager takes it
    and pages no one. The end counts from the post then; on time, from fired_at as before."""
    alert, am = make_alert(), ROUTES.receiver("am")
    late = orjson.loads(request_body(alert, am, "", alert.fired_at + timedelta(hours=3)))
    assert late[0]["startsAt"] == "2026-03-01T12:00:00.000Z"  # when it fired, still
    assert late[0]["endsAt"] == "2026-03-01T17:00:00.000Z"  # the post + resolve_after_s
    early = orjson.loads(request_body(alert, am, "", alert.fired_at - timedelta(minutes=5)))
    assert early[0]["endsAt"] == "2026-03-01T14:00:00.000Z"


def test_slack_shows_mentions_and_links_in_an_alert_literally() -> None:
    """A user id is any printable ASCII and budget alerts name it (message, scope key): a
    user called `<!channel>` paged the whole on-call channel, and `<https://…|…>` made a link
    in it. Slack reads `<…>` in mrkdwn text; escaped, it shows the characters."""
    user = "<!channel>"
    alert = make_alert().model_copy(
        update={
            "scope": Scope(tenant_id="acme", user_id=user),
            "message": f"User {user} spent it all, see <https://evil.example|the runbook> & pay",
        }
    )
    raw = request_body(alert, ROUTES.receiver("slack"), ROUTES.runbook_base_url).decode()
    assert "<!channel>" not in raw and "<https://evil" not in raw
    body = orjson.loads(raw)
    assert "User &lt;!channel&gt; spent it all" in body["text"]
    assert "&amp; pay" in body["blocks"][1]["text"]["text"]
    assert "user=&lt;!channel&gt;" in body["blocks"][2]["fields"][0]["text"]
    assert body["blocks"][3]["elements"][0]["text"].startswith("<https://git.example/")


def test_slack_text_escaped_stays_within_slack_s_limit() -> None:
    alert = make_alert().model_copy(update={"message": "<" * 1000})
    body = orjson.loads(request_body(alert, ROUTES.receiver("slack"), ""))
    section = body["blocks"][1]["text"]["text"]
    assert section == "&lt;" * 750 and len(body["text"]) <= 3000
    assert body["text"].endswith("&lt;")  # cut between escapes, not inside one
