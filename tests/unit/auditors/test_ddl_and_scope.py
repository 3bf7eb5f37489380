"""Server-mode DDL parses with ClickHouse's own parser (chDB); the analyzer's table lines are
read exactly (forged lines only add names to check); scope filters quote tenants safely."""

from __future__ import annotations

from collections.abc import Iterator

import chdb.session
import pytest

from agentaudit.auditors.ddl import create_statements, drop_statements
from agentaudit.auditors.registry import Auditor, token_sha256
from agentaudit.auditors.scope import Unscoped, scope_settings, tables_of_tree

AUDITOR = Auditor("kim", ("acme", "globex"), token_sha256("t"))
TABLES = ["agentaudit.events", "agentaudit.alerts", "agentaudit.auditor_queries"]


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[chdb.session.Session]:
    s = chdb.session.Session(str(tmp_path_factory.mktemp("parser")))
    yield s
    s.close()


def _parsed(session: chdb.session.Session, statement: str) -> str:
    result = session.query(
        "SELECT formatQuerySingleLine({s:String})", "TabSeparated", params={"s": statement}
    )
    return result.bytes().decode().strip()


def test_every_generated_statement_parses(session: chdb.session.Session) -> None:
    statements = create_statements(AUDITOR, TABLES) + drop_statements(AUDITOR, TABLES)
    assert len(statements) == 3 + 3 * len(TABLES) + 1 + 2 * len(TABLES) + 2
    for statement in statements:
        assert _parsed(session, statement)  # raises on a syntax error


def test_policies_are_both_kinds_on_every_table_and_settings_are_locked() -> None:
    text = "\n".join(create_statements(AUDITOR, TABLES))
    for table in TABLES:
        for kind in ("PERMISSIVE", "RESTRICTIVE"):
            assert (
                f"ON {table} AS {kind} FOR SELECT USING tenant_id IN ('acme', 'globex') TO kim"
            ) in text
        assert f"GRANT SELECT ON {table} TO kim" in text
    for setting in (
        "readonly = 1 CONST",
        "allow_ddl = 0 CONST",
        "allow_introspection_functions = 0 CONST",
    ):
        assert setting in text
    assert f"sha256_hash BY '{AUDITOR.token_sha256}'" in text


def test_a_broken_statement_would_be_caught(session: chdb.session.Session) -> None:
    with pytest.raises(RuntimeError):
        _parsed(session, create_statements(AUDITOR, TABLES)[1] + " junk")


def test_tree_lines_are_read_exactly() -> None:
    lines = [
        "QUERY id: 0",
        "  JOIN TREE",
        "    TABLE id: 3, alias: __table1, table_name: agentaudit.events",
    ]
    assert tables_of_tree(lines) == ["agentaudit.events"]
    # A table whose quoted name holds a forged suffix cannot pass as a readable one.
    forged = (
        "    TABLE id: 3, alias: __table1, table_name: default.x, table_name: agentaudit.events"
    )
    with pytest.raises(Unscoped):
        tables_of_tree([*lines, forged])
    # A forged extra line only adds a name; the real one is still there to be judged.
    assert tables_of_tree([*lines, "TABLE id: 9, table_name: default.x"])[-1] == "default.x"
    with pytest.raises(Unscoped):
        tables_of_tree(["    TABLE_FUNCTION id: 3, alias: __table1, table_function_name: numbers"])
    with pytest.raises(Unscoped, match="PREWHERE"):  # it runs before the tenant filter
        tables_of_tree([*lines, "  PREWHERE"])
    # A comma join's or ARRAY JOIN's operand label, and FINAL, are read; the name still is.
    operand = [
        "      TABLE EXPRESSION",
        "        TABLE id: 4, table_name: agentaudit.alerts, final: 1",
    ]
    assert tables_of_tree([*lines, *operand]) == ["agentaudit.events", "agentaudit.alerts"]
    with pytest.raises(Unscoped):
        tables_of_tree([*lines, "      TABLE EXPRESSION x"])


def test_scope_settings_quote_tenants(session: chdb.session.Session) -> None:
    text = scope_settings(["agentaudit.events"], ["acme", "o'brien"])
    session.query("CREATE TABLE IF NOT EXISTS t (tenant_id String) ENGINE = Memory", "TabSeparated")
    session.query("INSERT INTO t VALUES ('acme'), ('o''brien'), ('globex')", "TabSeparated")
    filters = text.replace("agentaudit.events", "default.t")
    got = session.query(
        f"SELECT count(), countIf(tenant_id = 'o\\'brien') FROM default.t SETTINGS {filters}",
        "TabSeparated",
    )
    assert got.bytes().decode().split() == ["2", "1"]
