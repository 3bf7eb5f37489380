"""Pipeline-made records: what the stream jobs publish, next to the agents' own events.

Alerts go to `agentaudit.alerts.v1`, control messages (the kill switch) to the compacted
`agentaudit.control.v1` keyed by `Scope.key`, breaker transitions and drift scores to the
alerts topic as their own record kinds, the jobs' heartbeats to the control topic under
`heartbeat/<source>` (no scope: see `Heartbeat`). All land in ClickHouse. Ids are deterministic
(`record_id`) so a job that replays after a crash re-publishes the *same* record and the
store keeps one copy: that is how "fires exactly once" survives restarts without
transactions (the local broker has no idempotent producer).
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from agentaudit_schemas.envelope import OpaqueId, Slug, StrictModel, TenantId, UtcDatetime

Scalar = str | int | float | bool
RecordId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]


def record_id(*parts: object) -> str:
    """A stable 32-hex id from the parts that make a record unique (kind, scope, window, …)."""
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:32]


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


_FIELD_MARKS = ("/user=", "/agent=", "/tool=")


def _key_part(value: str) -> str:
    """A user id as written in `Scope.key`: as is, unless it could fake a field or pass for
    an escaped one. User ids are any printable ASCII, so before, user "u/agent=bot" and user
    "u" with agent "bot" had the same key, and one scope's record replaced the other's state
    (a budget's unblock of the first lifted an operator's block of the second; compaction
    keeps one of them). Such an id, or one starting with "%", becomes "%" + the id with "%"
    and "=" percent-escaped: it has no "=" left, starts with "%" (no id left as is does), and
    every other id (agent and tool slugs have no "="; tenants are slugs) keeps its key."""
    if not value.startswith("%") and not any(mark in value for mark in _FIELD_MARKS):
        return value
    return "%" + value.replace("%", "%25").replace("=", "%3D")


class Scope(StrictModel):
    """What a budget, breaker or block applies to. Unset parts mean "any".

    `tenant_id="*"` is the global scope. The compacted control topic is keyed by `key`, so
    the latest message per scope is the scope's state.
    """

    tenant_id: TenantId | Literal["*"]
    user_id: OpaqueId | None = None
    agent_id: Slug | None = None
    tool: Slug | None = None

    @property
    def key(self) -> str:
        """`tenant=T[/user=U][/agent=A][/tool=X]`: one key per scope, and one scope per key
        (a user id that could fake a field is escaped: `_key_part`)."""
        parts = [f"tenant={self.tenant_id}"]
        if self.user_id is not None:
            parts.append(f"user={_key_part(self.user_id)}")
        if self.agent_id is not None:
            parts.append(f"agent={self.agent_id}")
        if self.tool is not None:
            parts.append(f"tool={self.tool}")
        return "/".join(parts)

    def covers(
        self, tenant_id: str, user_id: str | None, agent_id: str | None, tool: str | None
    ) -> bool:
        """True when work by (tenant, user, agent, tool) falls inside this scope."""
        return (
            self.tenant_id in ("*", tenant_id)
            and (self.user_id is None or self.user_id == user_id)
            and (self.agent_id is None or self.agent_id == agent_id)
            and (self.tool is None or self.tool == tool)
        )


class Alert(StrictModel):
    """One alert: what was seen, against what, where to look. `kind` names its runbook."""

    record: Literal["alert"] = "alert"
    alert_id: RecordId
    kind: Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Za-z0-9]{2,63}$")]
    severity: Severity
    scope: Scope
    window: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    """Human-readable window label, e.g. `day:2026-11-21` or `minute:2026-11-21T10:04`."""
    window_start: UtcDatetime
    window_end: UtcDatetime
    observed: float
    limit: float | None = None
    baseline: float | None = None
    score: float | None = None
    message: Annotated[str, StringConstraints(min_length=1, max_length=1000)]
    runbook: Annotated[str, StringConstraints(pattern=r"^runbooks/[A-Z][A-Za-z0-9]+\.md$")]
    fired_at: UtcDatetime
    details: dict[str, Scalar] = Field(default_factory=dict)

    @staticmethod
    def runbook_for(kind: str) -> str:
        return f"runbooks/{kind}.md"


class ControlAction(StrEnum):
    BLOCK = "block"
    UNBLOCK = "unblock"


class ControlReason(StrEnum):
    BUDGET_EXHAUSTED = "budget_exhausted"
    BREAKER_OPEN = "breaker_open"
    BREAKER_HALF_OPEN = "breaker_half_open"
    MANUAL = "manual"
    WINDOW_RESET = "window_reset"
    BREAKER_CLOSED = "breaker_closed"


class ControlMessage(StrictModel):
    """Block or unblock a scope; the SDK refuses work in blocked scopes (the kill switch)."""

    record: Literal["control"] = "control"
    control_id: RecordId
    scope: Scope
    action: ControlAction
    reason: ControlReason
    message: Annotated[str, StringConstraints(min_length=1, max_length=1000)]
    runbook: (
        Annotated[str, StringConstraints(pattern=r"^runbooks/[A-Z][A-Za-z0-9]+\.md$")] | None
    ) = None
    issued_at: UtcDatetime
    issued_by: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    until: UtcDatetime | None = None
    """When a block lifts by itself (a budget's window end); None = until unblocked."""


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class BreakerTransition(StrictModel):
    record: Literal["breaker_transition"] = "breaker_transition"
    transition_id: RecordId
    scope: Scope
    from_state: BreakerState
    to_state: BreakerState
    signal: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    """What moved it: error_rate, loop, cost_velocity, token_flood, cooldown, probe_ok,
    probe_failed."""
    observed: float
    threshold: float
    at: UtcDatetime


class DriftScore(StrictModel):
    record: Literal["drift_score"] = "drift_score"
    score_id: RecordId
    tenant_id: TenantId
    agent_id: Slug | Literal[""] = ""
    """The agent whose results or behaviour were tested; "" when the score is not per agent."""
    subject: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    """What drifted: `goldset:<id>/<metric>` or `behaviour:<agent>/tool_mix`,
    `…/tokens_per_call`, …"""
    agent_version: str = ""
    model: str = ""
    test: Literal["ks", "psi", "chi2", "binomial", "fisher"]
    statistic: float
    p_value: float | None = None
    reference_n: int = Field(ge=0)
    current_n: int = Field(ge=0)
    drifted: bool
    window_start: UtcDatetime
    window_end: UtcDatetime


HEARTBEAT_KEY_PREFIX = "heartbeat/"
"""Control-topic keys of heartbeats: `heartbeat/<source>`; a scope key starts `tenant=`."""


class Heartbeat(StrictModel):
    """A job's proof of life, on the compacted control topic under `heartbeat/<source>`.

    Published from the job's processing loop every `interval_s` (so a job that is alive but
    stuck stops beating); the latest per source is what compaction keeps. Not a scope: it
    blocks nothing, and the SDK reads it only to know how stale its view of the kill switch
    is. Stored in `agentaudit.heartbeats` (migration 0017), in no hash chain.
    """

    record: Literal["heartbeat"] = "heartbeat"
    heartbeat_id: RecordId
    source: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
    at: UtcDatetime
    seq: int = Field(ge=0)
    """Beats of this worker since it started (0 first): a gap or a reset says it restarted."""
    worker: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    """Who beat: `host:pid`."""
    interval_s: float = Field(gt=0)
    """How often this worker beats: readers judge staleness against it."""

    @property
    def key(self) -> str:
        return HEARTBEAT_KEY_PREFIX + self.source

    @classmethod
    def make(cls, source: str, at: datetime, seq: int, worker: str, interval_s: float) -> Heartbeat:
        """A heartbeat with its deterministic id (source, worker, seq, at)."""
        return cls(
            heartbeat_id=record_id("heartbeat", source, worker, seq, at.isoformat()),
            source=source,
            at=at,
            seq=seq,
            worker=worker,
            interval_s=interval_s,
        )
