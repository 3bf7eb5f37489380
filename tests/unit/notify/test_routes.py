"""The routing file: validation, first-match and continue semantics, secrets kept out."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentaudit.errors import UserError
from agentaudit.notify.routes import load_routes, parse_routes
from agentaudit_schemas.records import Severity
from tests.unit.notify.alerts import make_alert

TOKEN = "T0SECRET/B0SECRET/xoxbSecretToken123"

ROUTES = f"""
receivers:
  - {{name: slack-oncall, type: slack, url: "https://hooks.slack.example/services/{TOKEN}"}}
  - {{name: am, type: alertmanager, url: "http://127.0.0.1:9093"}}
  - {{name: audit-hook, type: webhook, url: "http://127.0.0.1:8080/hook"}}
routes:
  - match: {{tenant: [acme], severity: [critical]}}
    receiver: slack-oncall
    continue: true
  - match: {{kind: [BudgetExceeded, BreakerOpen]}}
    receiver: am
  - match: {{tenant: [globex]}}
    receiver: audit-hook
  - receiver: am
"""


def test_first_match_stops_unless_continue() -> None:
    routes = parse_routes(ROUTES)
    # acme critical: slack (continue) then am by kind; the walk stops at am.
    assert routes.receivers_for(make_alert()) == ["slack-oncall", "am"]
    # acme warning of another kind: slack does not match; am is the catch-all.
    warn = make_alert(kind="SpendAnomaly", severity=Severity.WARNING)
    assert routes.receivers_for(warn) == ["am"]
    # globex BudgetExceeded: the kind route matches first and stops before the tenant route.
    assert routes.receivers_for(make_alert(tenant="globex")) == ["am"]
    assert routes.receivers_for(make_alert(tenant="globex", kind="DenyRateSpike")) == ["audit-hook"]


def test_no_route_no_receiver_and_each_receiver_once() -> None:
    routes = parse_routes("""
receivers: [{name: a, type: webhook, url: "http://h:1/x"}]
routes:
  - {match: {tenant: [acme]}, receiver: a, continue: true}
  - {match: {severity: [critical]}, receiver: a}
""")
    assert routes.receivers_for(make_alert()) == ["a"]
    assert routes.receivers_for(make_alert(tenant="initech", severity=Severity.INFO)) == []


@pytest.mark.parametrize(
    ("doc", "says"),
    [
        (
            "receivers: [{name: a, type: webhook, url: 'http://h/x'}]\nroutes: [{receiver: b}]",
            "unknown receivers: b",
        ),
        (
            (
                "receivers: [{name: a, type: webhook, url: 'http://h/x'}, {name: a, type: slack, "
                "url: 'http://h/y'}]\nroutes: [{receiver: a}]"
            ),
            "unique: a",
        ),
        (
            "receivers: [{name: a, type: pager, url: 'http://h/x'}]\nroutes: [{receiver: a}]",
            "receivers.0.type",
        ),
        ("receivers: [{name: a, type: webhook}]\nroutes: [{receiver: a}]", "exactly one of url"),
        (
            (
                "receivers: [{name: a, type: webhook, url: 'http://h/x', colour: red}]\n"
                "routes: [{receiver: a}]"
            ),
            "receivers.0.colour",
        ),
        (
            (
                "receivers: [{name: a, type: webhook, url: 'http://h/x'}]\n"
                "routes: [{receiver: a, match: {severity: [loud]}}]"
            ),
            "routes.0.match.severity.0",
        ),
        ("receivers: [\n", "not valid YAML at line"),
    ],
)
def test_invalid_files_say_where(doc: str, says: str) -> None:
    with pytest.raises(UserError, match=says.replace(".", r"\.")):
        parse_routes(doc)


def test_errors_never_show_a_secret(tmp_path: Path) -> None:
    # A bad field next to the token, and a token in a URL that is not http(s).
    bad = ROUTES.replace("type: slack", "type: slack, timeout_s: -1")
    with pytest.raises(UserError) as caught:
        parse_routes(bad)
    assert "timeout_s" in str(caught.value) and TOKEN not in str(caught.value)
    path = tmp_path / "routes.yaml"
    path.write_text(ROUTES.replace("https://hooks", "ftp://hooks"))
    with pytest.raises(UserError) as caught:
        load_routes(path)
    assert "slack-oncall" in str(caught.value) and TOKEN not in str(caught.value)
    # The parsed model never shows it either (SecretStr).
    assert TOKEN not in repr(parse_routes(ROUTES))


@pytest.mark.parametrize(
    "url", [f"http://hooks.example:99999/{TOKEN}", f"http://[::1/{TOKEN}"], ids=["port", "ipv6"]
)
def test_a_url_no_client_can_post_to_is_refused_at_start(url: str, tmp_path: Path) -> None:
    """A port past 65535 or a broken IPv6 literal passed `load_routes`, then every start of
    the receiver raised a ValueError (the worker restarted it with back-off for ever)."""
    path = tmp_path / "routes.yaml"
    path.write_text(
        f'receivers: [{{name: hook, type: webhook, url: "{url}"}}]\nroutes: [{{receiver: hook}}]\n'
    )
    with pytest.raises(UserError, match="hook: its URL must be") as caught:
        load_routes(path)
    assert TOKEN not in str(caught.value)


def test_url_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(
        "receivers: [{name: s, type: slack, url_env: TEST_SLACK_URL}]\nroutes: [{receiver: s}]\n"
    )
    monkeypatch.delenv("TEST_SLACK_URL", raising=False)
    with pytest.raises(UserError, match="TEST_SLACK_URL is not set"):
        load_routes(path)
    monkeypatch.setenv("TEST_SLACK_URL", f"https://hooks.slack.example/services/{TOKEN}")
    assert load_routes(path).receiver("s").resolved_url().endswith(TOKEN)


def test_alertmanager_url_gets_the_v2_path() -> None:
    am = parse_routes(ROUTES).receiver("am")
    assert am.resolved_url() == "http://127.0.0.1:9093/api/v2/alerts"


def test_the_readme_example_is_a_valid_routing_file(monkeypatch: pytest.MonkeyPatch) -> None:
    readme = (Path(__file__).parents[3] / "README.md").read_text()
    example = readme.split("# routes.yaml: receivers, then routes", 1)[1].split("\n", 1)[1]
    example = example.split("```", 1)[0]
    monkeypatch.setenv("SLACK_ONCALL_WEBHOOK", f"https://hooks.slack.example/services/{TOKEN}")
    routes = parse_routes(example)
    for receiver in routes.receivers:
        receiver.resolved_url()
    assert routes.receivers_for(make_alert()) == ["oncall-slack", "audit-hook"]
    assert routes.receivers_for(make_alert(tenant="globex", severity=Severity.INFO)) == [
        "alertmanager"
    ]
