"""The routing file: which receivers get which alerts (YAML, validated with pydantic).

Semantics are Alertmanager's, flattened: `routes` are tried in order; the first route whose
`match` holds gets the alert and the walk stops there, unless that route says
`continue: true`, in which case the walk goes on and later matches add their receivers too.
An alert that matches no route is delivered nowhere (put a catch-all route last, one with
no `match`, to be sure every alert reaches someone). A `match` key that is absent means
"any"; a present key lists the values accepted (any of them).

Secrets: a receiver's `url` (a Slack webhook URL is a token) and `headers` values are
`SecretStr`, so they never show in a repr; or give `url_env`, the name of an environment
variable holding the URL, and keep it out of the file altogether. `load_routes` reports
validation errors without the offending values, so a typo never prints a token.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    ValidationError,
    model_validator,
)
from yarl import URL

from agentaudit.errors import UserError
from agentaudit_schemas.records import Alert, Severity

ReceiverName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
ReceiverType = Literal["webhook", "slack", "alertmanager"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ReceiverConfig(_Model):
    """One place alerts go. The consumer group `<consumer_group>-notify-<name>` is its own."""

    name: ReceiverName
    type: ReceiverType
    url: SecretStr | None = None
    """webhook/slack: the URL posted to; alertmanager: its base URL (…/api/v2/alerts is added)."""
    url_env: str | None = None
    """Instead of `url`: the environment variable that holds it (keeps tokens out of the file)."""
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    """Extra request headers (e.g. Authorization); their values are secrets."""
    timeout_s: float = Field(default=10.0, gt=0, le=300)
    resolve_after_s: float = Field(default=3600.0, gt=0)
    """alertmanager: endsAt = this after fired_at or after the post, whichever is later (our
    alerts are events; nothing resolves them)."""

    @model_validator(mode="after")
    def _one_url(self) -> ReceiverConfig:
        if (self.url is None) == (self.url_env is None):
            raise ValueError("give exactly one of url and url_env")
        return self

    def resolved_url(self) -> str:
        """The URL to post to (read from `url_env` when given); checked to be http(s)."""
        if self.url is not None:
            url = self.url.get_secret_value()
        else:
            assert self.url_env is not None
            url = os.environ.get(self.url_env, "")
            if not url:
                raise UserError(
                    f"receiver {self.name}: environment variable {self.url_env} is not set"
                )
        bad = UserError(f"receiver {self.name}: its URL must be http(s)://host[:port]/…")
        try:
            # the port and yarl's parse too: a port past 65535 or a broken IPv6 literal
            # passed here and failed every start of the receiver's loop (in the worker, a
            # restart with back-off for ever, logged as a bare ValueError)
            parts = urlsplit(url)
            _ = parts.port, URL(url)
        except ValueError:
            raise bad from None  # the text would quote the URL: it may be a token
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise bad
        if self.type == "alertmanager":
            url = url.rstrip("/") + "/api/v2/alerts"
        return url


class Match(_Model):
    """Conditions of a route; absent = any value."""

    tenant: list[str] | None = None
    kind: list[str] | None = None
    severity: list[Severity] | None = None

    def holds(self, alert: Alert) -> bool:
        return (
            (self.tenant is None or alert.scope.tenant_id in self.tenant)
            and (self.kind is None or alert.kind in self.kind)
            and (self.severity is None or alert.severity in self.severity)
        )


class Route(_Model):
    match: Match = Field(default_factory=Match)
    receiver: ReceiverName
    continue_: bool = Field(default=False, alias="continue")


class Backoff(_Model):
    """Retry delays: `base_s * factor**attempt`, capped at `cap_s`, with jitter (see backoff.py)."""

    base_s: float = Field(default=0.5, gt=0)
    factor: float = Field(default=2.0, ge=1)
    cap_s: float = Field(default=60.0, gt=0)


class Routes(_Model):
    """The whole routing file."""

    receivers: list[ReceiverConfig] = Field(min_length=1)
    routes: list[Route] = Field(min_length=1)
    runbook_base_url: str = ""
    """Prefix of `runbook_url` (e.g. https://git.example/agentaudit/blob/main/); the alert's
    `runbook` path (runbooks/<Kind>.md) is appended."""
    max_alert_age_s: float = Field(default=86_400.0, ge=0)
    """Alerts fired longer ago than this are not delivered (counted `expired`): a receiver
    added today does not page for last month's alerts; 0 = no limit."""
    dedup_window: int = Field(default=10_000, ge=0)
    """Alert ids per receiver remembered (and re-read from the topic on start) to drop re-sent
    alerts."""
    backoff: Backoff = Field(default_factory=Backoff)

    @model_validator(mode="after")
    def _names(self) -> Routes:
        names = [r.name for r in self.receivers]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"receiver names must be unique: {', '.join(dup)}")
        unknown = sorted({r.receiver for r in self.routes} - set(names))
        if unknown:
            raise ValueError(f"routes name unknown receivers: {', '.join(unknown)}")
        return self

    def receivers_for(self, alert: Alert) -> list[str]:
        """Receiver names the alert goes to, in route order, each once."""
        chosen: list[str] = []
        for route in self.routes:
            if route.match.holds(alert):
                if route.receiver not in chosen:
                    chosen.append(route.receiver)
                if not route.continue_:
                    break
        return chosen

    def receiver(self, name: str) -> ReceiverConfig:
        return next(r for r in self.receivers if r.name == name)

    def expired(self, alert: Alert, now: datetime) -> bool:
        """Whether `alert` fired longer than `max_alert_age_s` before `now` (never if 0)."""
        age = self.max_alert_age_s
        return age > 0 and alert.fired_at < now - timedelta(seconds=age)


def parse_routes(text: str, source: str = "routes") -> Routes:
    """Validate a routing document; errors name the field, never the value (it may be a token)."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"{source}: not valid YAML{where}") from None
    try:
        return Routes.model_validate(doc)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False, include_context=False)
        )
        raise UserError(f"{source}: {problems}") from None


def load_routes(path: Path) -> Routes:
    """Read and validate the routing file at `path`; every receiver's URL is checked here."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot read the routing file {path}: {exc.strerror}") from None
    routes = parse_routes(text, str(path))
    for receiver in routes.receivers:
        receiver.resolved_url()  # a missing env variable or a bad URL: say so at start
    return routes
