"""The auditor path: judge, scope, run, record, and only then answer.

`AuditorGate.run` is the one path every auditor statement takes, from the CLI
(`agentaudit query --as`) and from the store's HTTP endpoint alike; the channel only decides
how the allowed statement is executed (`Execute`). Every statement (allowed, refused or
failed) becomes one `auditor_query` event per tenant in the auditor's scope, published with
acknowledgement BEFORE the result or refusal is returned: if it cannot be recorded, the
auditor gets `AccessLogUnavailable` and no rows.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

from agentaudit.auditors.registry import Auditor
from agentaudit.auditors.scope import (
    Unscoped,
    auditor_policy,
    readable_tables,
    resolved_tables,
    scope_settings,
)
from agentaudit.errors import BadQuery, UserError
from agentaudit.keyring import KeyRing
from agentaudit.settings import Settings
from agentaudit.sqlguard import Limits, Verdict, check, fence, stopped_by_limit
from agentaudit.store.protocol import Store
from agentaudit.system_events import publish, sign_event, system_event
from agentaudit.trail.note import Signer
from agentaudit_schemas.payloads import MAX_MESSAGE_CHARS, MAX_STATEMENT_CHARS
from agentaudit_sdk.clock import UtcNow, utc_now

T = TypeVar("T")


@dataclass(frozen=True)
class Counts:
    """What the engine reports about one run (its query summary)."""

    result_rows: int = 0
    read_rows: int = 0
    read_bytes: int = 0


@dataclass(frozen=True)
class Fenced:
    """An allowed statement as it runs (scoped, read-only, limited), and the same fence around
    `SELECT count()` of it, for channels whose result the engine does not count."""

    text: str
    count_text: str


Execute = Callable[[Fenced], tuple[T, Counts]]
"""Runs the fenced statement and returns its result and counts."""

Publish = Callable[[Settings, Sequence[dict[str, Any]]], None]


class AccessLogUnavailable(UserError):
    """The statement could not be recorded, so nothing is returned (exit code 3, as the broker
    being unreachable is the usual cause)."""

    exit_code = 3


@dataclass(frozen=True)
class AccessEntry:
    """One statement's entry in the access log (before it becomes events)."""

    statement: str
    verdict: str  # allowed | refused | failed
    reason: str
    counts: Counts
    duration_ms: float


def summary_counts(summary: dict[str, Any] | None, result_rows: int) -> Counts:
    """Counts from an `X-ClickHouse-Summary` (clickhouse-connect's `QueryResult.summary`)."""
    summary = summary or {}
    return Counts(result_rows, int(summary.get("read_rows", 0)), int(summary.get("read_bytes", 0)))


@dataclass
class AuditorGate(Generic[T]):
    """Runs statements for auditors against `store` (an operator connection) and records them."""

    settings: Settings
    store: Store
    limits: Limits = field(default_factory=Limits)
    publish: Publish = publish
    now: UtcNow = utc_now
    clock: Callable[[], float] = time.perf_counter

    def run(self, auditor: Auditor, sql: str, channel: str, execute: Execute[T]) -> T:
        """The result of `sql` for `auditor`, recorded first. BadQuery when refused; the run's
        own error when it failed; AccessLogUnavailable when it could not be recorded."""
        start = self.clock()
        statement, result = sql, None
        error: Exception | None = None
        counts, verdict, reason = Counts(), "failed", ""
        ran = False  # the statement was judged allowed and handed to `execute`
        try:
            tables = readable_tables(self.store)
            judged = check(self.store, sql, auditor_policy(tables))
            statement = judged.statement
            scope = scope_settings(tables, auditor.tenants)
            counted = replace(judged, statement=f"SELECT count() FROM (\n{statement}\n)")
            fenced = Fenced(fence(judged, self.limits, scope), fence(counted, self.limits, scope))
            if judged.allowed:
                judged = self._resolve(judged, fenced.text, tables)
            if not judged.allowed:
                verdict, reason = "refused", judged.reason
            else:
                ran = True
                result, counts = execute(fenced)
                verdict, reason = "allowed", "allowed"
        except Exception as exc:  # noqa: BLE001 - recorded, then re-raised
            if isinstance(exc, BadQuery) and not ran:  # ClickHouse's parser could not read it
                verdict, reason, error = "refused", f"refused: {exc}", exc
            else:  # it ran and failed (an error while reading rows is not a refusal)
                stopped = stopped_by_limit(exc, self.limits, auditor_policy(()))
                error = stopped or exc
                reason = f"failed: {stopped}" if stopped else failure(exc)
        record = AccessEntry(statement, verdict, reason, counts, (self.clock() - start) * 1000)
        self._record(auditor, channel, record)
        if verdict == "refused":
            raise BadQuery(reason) from error
        if error is not None:
            raise error
        return result  # type: ignore[return-value]

    def _resolve(self, judged: Verdict, fenced: str, tables: frozenset[str]) -> Verdict:
        """The analyzer's wall: every table the fenced statement really reads is readable."""
        try:
            read = resolved_tables(self.store, fenced)
        except Unscoped as exc:
            return replace(judged, allowed=False, reason=f"refused: {exc}")
        # A SELECT without FROM reads system.one (one row, one zero): nothing to scope.
        outside = sorted(set(read) - tables - {"system.one"})
        if outside:
            return replace(
                judged,
                allowed=False,
                reason=f"refused: table {outside[0]} is "
                "outside what auditors read (agentaudit tables with a tenant_id)",
            )
        return judged

    def _record(self, auditor: Auditor, channel: str, record: AccessEntry) -> None:
        try:
            # Read per statement: after `agentaudit keys rotate` the new key signs at once (an
            # entry signed by a retired key does not verify for its time).
            signer = KeyRing.load(self.settings.key_dir).signer
            events = access_events(
                auditor, channel, record, signer, self.settings.deployment, self.now
            )
            self.publish(self.settings, events)
        except Exception as exc:
            raise AccessLogUnavailable(
                f"the statement could not be recorded in the access log ({exc}); nothing is "
                "returned unrecorded: retry once the broker is reachable"
            ) from exc


def failure(exc: Exception) -> str:
    """What the access log keeps of a run that failed: the error's kind and ClickHouse code,
    never its text. The text can quote values of the rows read ("Cannot parse string 'x' as
    UInt8"), and the entry goes to every tenant of the auditor: a two-tenant auditor's failed
    read of tenant B put B's values in tenant A's trail, where A's auditors read them. The
    auditor still gets the whole message in its answer."""
    code = getattr(exc, "code", None)
    if code is None and exc.__cause__ is not None:
        code = getattr(exc.__cause__, "code", None)
    return f"failed: {type(exc).__name__}" + (f" (ClickHouse code {code})" if code else "")


def access_events(
    auditor: Auditor,
    channel: str,
    record: AccessEntry,
    signer: Signer,
    deployment: str,
    now: UtcNow = utc_now,
) -> list[dict[str, Any]]:
    """One `auditor_query` event per tenant in the auditor's scope, each signed by ``signer``
    (the deployment's checkpoint key): anyone who can produce to the events topic can write an
    `auditor_query` event, only the gate can sign one (`agentaudit.auditors.access_log`)."""
    text = record.statement
    payload: dict[str, Any] = {
        "auditor": auditor.name,
        "tenants": list(auditor.tenants),
        "channel": channel,
        "statement": text[:MAX_STATEMENT_CHARS],
        "statement_sha256": hashlib.sha256(text.encode()).hexdigest(),
        "truncated": len(text) > MAX_STATEMENT_CHARS,
        "verdict": record.verdict,
        "reason": record.reason[:MAX_MESSAGE_CHARS],
        "result_rows": record.counts.result_rows,
        "read_rows": record.counts.read_rows,
        "read_bytes": record.counts.read_bytes,
        "duration_ms": min(round(record.duration_ms, 3), 86_400_000.0),
    }
    return [
        sign_event(
            system_event("auditor_query", tenant, payload, user_id=auditor.name, now=now),
            signer,
            deployment,
        )
        for tenant in auditor.tenants
    ]


def run_cli(settings: Settings, store: Store, name: str, token: str, sql: str) -> Any:
    """`agentaudit query --as NAME`: the auditor's statement through the gate, channel `cli`."""
    from agentaudit.auditors.registry import authenticate

    auditor = authenticate(store, name, token)

    def execute(fenced: Fenced) -> tuple[Any, Counts]:
        result = store.query(fenced.text)
        return result, summary_counts(getattr(result, "summary", None), len(result.result_rows))

    gate: AuditorGate[Any] = AuditorGate(settings, store)
    return gate.run(auditor, sql, "cli", execute)
