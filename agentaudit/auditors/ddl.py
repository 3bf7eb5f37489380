"""Server mode: the ClickHouse access-control DDL of one auditor, generated as data.

With a clickhouse-server (`settings.embedded` False) `auditors add` also creates a ClickHouse
user whose password is the token (stored as its SHA-256), so the server itself enforces the
scope: a PERMISSIVE and a RESTRICTIVE row policy `USING tenant_id IN (...)` on every
auditor-readable table (the restrictive one bounds any permissive policy granted later), a
settings profile whose read-only and limit settings are CONST, a quota, and `GRANT SELECT` on
exactly those tables. The server must run with
`access_control_improvements.users_without_row_policies_can_read_rows = false` (README,
"Auditors"). No real server is tested here: every statement is checked against ClickHouse's
own parser through chDB (`tests/unit/auditors/test_ddl.py`).
"""

from __future__ import annotations

from collections.abc import Iterable

from agentaudit.auditors.registry import Auditor
from agentaudit.sqlguard import Limits
from agentaudit.store.protocol import Store

# Quota per auditor and hour: generous for an investigation, bounded for a runaway script.
QUOTA = "queries = 1000, read_rows = 10000000000, execution_time = 3600"


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _names(auditor: Auditor) -> tuple[str, str, str]:
    # Auditor names are [a-z][a-z0-9_]*: safe as bare identifiers.
    return auditor.name, f"agentaudit_auditor_{auditor.name}", f"agentaudit_auditor_{auditor.name}"


def _policy_name(auditor: Auditor, kind: str) -> str:
    return f"agentaudit_auditor_{auditor.name}_{kind}"


def create_statements(
    auditor: Auditor, tables: Iterable[str], limits: Limits | None = None
) -> list[str]:
    """The statements that give `auditor` scoped read access to `tables` on a server."""
    limits = limits or Limits()
    user, profile, quota = _names(auditor)
    in_list = ", ".join(_quote(t) for t in auditor.tenants)
    statements = [
        (
            f"CREATE SETTINGS PROFILE OR REPLACE {profile} SETTINGS readonly = 1 CONST, "
            "allow_ddl = 0 CONST, allow_introspection_functions = 0 CONST, "
            f"max_execution_time = {limits.max_seconds:g} CONST, "
            "timeout_overflow_mode = 'throw' CONST, "
            f"max_result_rows = {limits.max_rows} CONST, "
            f"max_result_bytes = {limits.max_result_bytes} CONST, "
            "result_overflow_mode = 'throw' CONST, "
            f"max_memory_usage = {limits.max_memory_bytes} CONST, "
            f"max_rows_to_read = {limits.max_rows * 1000} CONST, read_overflow_mode = "
            "'throw' CONST, "
            "additional_table_filters = '{}' CONST"
        ),
        (
            f"CREATE USER OR REPLACE {user} IDENTIFIED WITH sha256_hash BY "
            f"{_quote(auditor.token_sha256)} SETTINGS PROFILE {profile}"
        ),
        (
            f"CREATE QUOTA OR REPLACE {quota} KEYED BY user_name FOR INTERVAL 1 hour MAX {QUOTA} "
            f"TO {user}"
        ),
    ]
    for table in sorted(tables):
        for kind in ("PERMISSIVE", "RESTRICTIVE"):
            statements.append(
                f"CREATE ROW POLICY OR REPLACE {_policy_name(auditor, kind.lower())} ON {table} "
                f"AS {kind} FOR SELECT USING tenant_id IN ({in_list}) TO {user}"
            )
        statements.append(f"GRANT SELECT ON {table} TO {user}")
    return statements


def drop_statements(auditor: Auditor, tables: Iterable[str]) -> list[str]:
    """The statements that remove everything `create_statements` made (revocation)."""
    user, profile, quota = _names(auditor)
    statements = [f"DROP USER IF EXISTS {user}"]  # first: the user loses access at once
    for table in sorted(tables):
        for kind in ("permissive", "restrictive"):
            statements.append(f"DROP ROW POLICY IF EXISTS {_policy_name(auditor, kind)} ON {table}")
    statements += [f"DROP QUOTA IF EXISTS {quota}", f"DROP SETTINGS PROFILE IF EXISTS {profile}"]
    return statements


def apply(store: Store, statements: Iterable[str]) -> None:
    """Run `statements` in order on a server (stops at the first error, which propagates)."""
    for statement in statements:
        store.command(statement)
