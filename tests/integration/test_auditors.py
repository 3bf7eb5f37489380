"""Auditors end to end: the CLI commands and exit codes, immediate revocation, and no answer
when the statement cannot be recorded (the access log comes first)."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Sequence
from typing import Any

import pytest

from agentaudit.auditors import registry
from agentaudit.auditors.gate import AccessLogUnavailable, AuditorGate, Counts, Fenced
from agentaudit.broker import ensure_topics
from agentaudit.settings import Settings
from agentaudit.store import open_store
from agentaudit.store.bench import events_like
from agentaudit.store.migrations import migrate
from agentaudit.store.protocol import column_text
from tests.conftest import settings_env

pytestmark = pytest.mark.integration


def cli(
    settings: Settings, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [".venv/bin/agentaudit", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**settings_env(settings), **(env or {})},
    )


def test_add_query_as_list_rm_through_the_cli(settings: Settings) -> None:
    asyncio.run(ensure_topics(settings))
    with open_store(settings) as store:
        migrate(store)
        columns, names = events_like(100)
        store.insert("agentaudit.events", columns, names)
    added = cli(settings, "auditors", "add", "kim", "--tenant", "tenant-1")
    assert added.returncode == 0, added.stderr
    token = added.stdout.split("token (shown once; give it to the auditor): ")[1].split()[0]
    env = {"AGENTAUDIT_AUDITOR_TOKEN": token}
    ran = cli(
        settings,
        "query",
        "--as",
        "kim",
        "-f",
        "csv",
        "SELECT tenant_id, count() FROM agentaudit.events GROUP BY tenant_id",
        env=env,
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split() == ["tenant_id,count()", "tenant-1,5"]
    refused = cli(settings, "query", "--as", "kim", "SELECT * FROM system.one", env=env)
    assert refused.returncode == 5 and "refused" in refused.stderr
    wrong = cli(settings, "query", "--as", "kim", "SELECT 1", env={"AGENTAUDIT_AUDITOR_TOKEN": "x"})
    assert wrong.returncode == 2 and "authentication failed" in wrong.stderr
    listed = cli(settings, "auditors", "list")
    assert "kim" in listed.stdout and "tenant-1" in listed.stdout
    assert cli(settings, "auditors", "rm", "kim").returncode == 0
    revoked = cli(settings, "query", "--as", "kim", "SELECT 1", env=env)
    assert revoked.returncode == 2 and "authentication failed" in revoked.stderr
    with open_store(settings) as store:  # the registry is a history: added, then removed
        rows = store.query(
            "SELECT action, token_sha256 FROM agentaudit.auditors ORDER BY seq"
        ).result_rows
    assert [r[0] for r in rows] == ["added", "removed"]
    assert token not in str(rows) and column_text(rows[0][1]) == registry.token_sha256(token)


def test_no_rows_when_the_statement_cannot_be_recorded(settings: Settings) -> None:
    def down(_settings: Settings, _events: Sequence[dict[str, Any]]) -> None:
        raise OSError("broker unreachable")

    ran: list[str] = []

    def execute(fenced: Fenced) -> tuple[str, Counts]:
        ran.append(fenced.text)
        return "rows", Counts(1, 1, 1)

    with open_store(settings) as store:
        migrate(store)
        auditor, _ = registry.add(store, "kim", ["tenant-1"])
        gate: AuditorGate[str] = AuditorGate(settings, store, publish=down)
        with pytest.raises(AccessLogUnavailable):
            gate.run(auditor, "SELECT count() FROM agentaudit.events", "cli", execute)
        with pytest.raises(AccessLogUnavailable):  # a refusal is not answered unrecorded either
            gate.run(auditor, "SELECT * FROM system.tables", "cli", execute)
    assert len(ran) == 1  # it ran, but its rows never reached the caller


def test_a_failed_run_leaves_no_row_values_in_the_other_tenants_trail(
    settings: Settings,
) -> None:
    # Found by the auditor probe: the access log kept a failed run's error text, which quotes
    # the values read, and every tenant of the auditor gets the entry; so an auditor of
    # tenant-1 alone read tenant-2's values in the entry of a tenant-1 + tenant-2 auditor.
    published: list[dict[str, Any]] = []

    def keep(_settings: Settings, events: Sequence[dict[str, Any]]) -> None:
        published.extend(events)

    def execute(fenced: Fenced) -> tuple[Any, Counts]:
        return store.query(fenced.text), Counts()

    with open_store(settings) as store:
        migrate(store)
        columns, names = events_like(100)
        store.insert("agentaudit.events", columns, names)
        both, _ = registry.add(store, "kim", ["tenant-1", "tenant-2"])
        gate: AuditorGate[Any] = AuditorGate(settings, store, publish=keep)
        sql = "SELECT toUInt8(tenant_id) FROM agentaudit.events WHERE tenant_id = 'tenant-2'"
        with pytest.raises(Exception, match="Cannot parse string 'tenant-2'"):
            gate.run(both, sql, "cli", execute)  # the auditor itself is told
    assert {e["tenant_id"] for e in published} == {"tenant-1", "tenant-2"}
    reasons = {e["payload"]["reason"] for e in published}
    assert reasons == {"failed: BadQuery (ClickHouse code 6)"}, reasons
