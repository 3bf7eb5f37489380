"""Reading the action trail: one row per agent action from `agentaudit.action_trail`.

The view (migration 0015) does the joining and the flagging, so an auditor's SQL, the CLI
and the tests all read the same answer; this module only picks rows (a run, an action, or a
tenant's time window, optionally flagged only) and names the columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agentaudit.errors import UserError
from agentaudit.store.protocol import Store

FLAGS = ("no_decision", "write_without_approval", "executed_after_deny")
"""The flags, in the order they are shown; README "The action trail" gives each one's rule."""

COLUMNS = (
    "tenant_id",
    "action_id",
    "run_id",
    "trace_id",
    "agent_id",
    "user_id",
    "requested_at",
    "tool",
    "action",
    "resource",
    "args_hash",
    "side_effect",
    "idempotency_key",
    "decisions",
    "rule_id",
    "decision",
    "reason",
    "policy_hash",
    "decided_at",
    "approval_id",
    "approval_risk",
    "approver_id",
    "approval_outcome",
    "approval_latency_ms",
    "approval_decided_at",
    "approved_at",
    "executions",
    "exec_status",
    "exec_error",
    "exec_latency_ms",
    "exec_started_at",
    "executed_at",
    "stop_reason",
    *FLAGS,
    "flagged",
)

MAX_ACTIONS = 100_000
"""A query answers at most this many actions (ordered by time); narrow the window for more."""


@dataclass(frozen=True)
class TrailQuery:
    """Which actions: one run, one action, or one tenant between `since` and `until`."""

    run: str | None = None
    action: str | None = None
    tenant: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    flagged: bool = False

    def check(self) -> None:
        """Raise `UserError` unless exactly one of run, action, tenant is given (and the time
        window only with a tenant, where it is needed to keep the answer small)."""
        chosen = [name for name in ("run", "action", "tenant") if getattr(self, name)]
        if len(chosen) != 1:
            raise UserError("give exactly one of --run, --action or --tenant")
        if (self.since or self.until) and not self.tenant:
            raise UserError("--from and --to select a tenant's actions: use them with --tenant")
        if self.since and self.until and self.since >= self.until:
            raise UserError("--from must be before --to")

    def sql(self) -> tuple[str, dict[str, Any]]:
        """The SELECT over the view, with its parameters (never pasted into the text)."""
        where: list[str] = []
        params: dict[str, Any] = {}
        if self.run:
            where.append("run_id = {run:String}")
            params["run"] = self.run
        if self.action:
            where.append("action_id = {action:String}")
            params["action"] = self.action
        if self.tenant:
            where.append("tenant_id = {tenant:String}")
            params["tenant"] = self.tenant
        if self.since:
            where.append("requested_at >= {since:DateTime64(6, 'UTC')}")
            params["since"] = self.since
        if self.until:
            where.append("requested_at < {until:DateTime64(6, 'UTC')}")
            params["until"] = self.until
        if self.flagged:
            where.append("flagged")
        sql = (
            f"SELECT {', '.join(COLUMNS)} FROM agentaudit.action_trail WHERE {' AND '.join(where)} "
            f"ORDER BY requested_at, action_id LIMIT {MAX_ACTIONS}"
        )
        return sql, params


def fetch(store: Store, query: TrailQuery) -> list[dict[str, Any]]:
    """The actions `query` selects, oldest first, each a dict keyed by `COLUMNS`."""
    query.check()
    sql, params = query.sql()
    result = store.query(sql, params)
    return [dict(zip(COLUMNS, row, strict=True)) for row in result.result_rows]


def flags_of(action: dict[str, Any]) -> list[str]:
    """The names of the flags an action carries."""
    return [flag for flag in FLAGS if action[flag]]
