"""What an auditor may read, and the engine-enforced scope it reads it under.

The readable set is found at run time: every `agentaudit` table or view with a `tenant_id`
column (`system.columns`), minus `DENIED` and minus materialized views (a write path, not a
read path). A new view with a `tenant_id` column is readable and scoped without code changes.

A statement runs only if it passes three walls, any of which alone refuses:
1. `sqlguard.check` with `auditor_policy`: ClickHouse's parser, one SELECT (UNION ALL,
   subqueries, CTEs), tables only from the readable set, no table functions, no SETTINGS,
   no functions that reach out, and only node kinds listed in `NODE_KINDS`.
2. `resolved_tables`: ClickHouse's analyzer (`EXPLAIN QUERY TREE`) names the tables the
   statement really reads, after CTEs and unqualified names are resolved; each must be readable.
3. the run itself carries `additional_table_filters` (`tenant_id IN (...)`) for every readable
   table, applied by the engine to every read of it, inside views and subqueries too; the
   auditor cannot send settings (wall 1), and `readonly = 1` follows the filters.

The engine applies those filters AFTER the read, while a PREWHERE runs inside it: a condition
there (written, or moved there by `optimize_move_to_prewhere`) saw every tenant's rows, and its
errors and `throwIf` told them (`toUInt8(payload)` printed another tenant's value). So PREWHERE
is refused (wall 2) and nothing is moved there: the statement's conditions then run in filters
after the tenant filter, or in the one conjunction the planner builds with it first, whose
later terms are evaluated lazily (the default short-circuit evaluation) on the rows it kept.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from agentaudit import sqlguard
from agentaudit.sqlguard import SELECT, Policy
from agentaudit.store.protocol import Store

DATABASE = "agentaudit"
# Tables with a `tenant_id` column that auditors must still not read (none today; the registry
# has no `tenant_id` column and is listed so that adding one never makes it readable).
DENIED = frozenset({"agentaudit.auditors", "agentaudit.schema_migrations"})

# Functions that echo who or where the query runs, read settings, server state or other
# tables by name, or stall the shared embedded engine; on top of what the operator is denied.
_AUDITOR_DENIED = frozenset(
    {
        "getsetting",
        "getsettingordefault",
        "getserversetting",
        "getmergetreesetting",
        "getmacro",
        "user",
        "authenticateduser",
        "authuser",
        "currentuser",
        "current_user",
        "session_user",
        "currentdatabase",
        "database",
        "current_database",
        "currentschemas",
        "current_schemas",
        "currentprofiles",
        "currentroles",
        "enabledprofiles",
        "enabledroles",
        "defaultroles",
        "defaultprofiles",
        "queryid",
        "initialqueryid",
        "initialquerystarttime",
        "hostname",
        "fullhostname",
        "fqdn",
        "tcpport",
        "getserverport",
        "serveruuid",
        "displayname",
        "uptime",
        "filesystemavailable",
        "filesystemcapacity",
        "filesystemunreserved",
        "getoskernelversion",
        "buildid",
        "connectionid",
        "connection_id",
        "sleep",
        "sleepeachrow",
        "logtrace",  # writes the auditor's text into the server's log
        "globalvariable",
        "addresstoline",
        "addresstolinewithinlines",
        "addresstosymbol",
        "demangle",
        "transactionid",
        "transactionlatestsnapshot",
        "transactionoldestsnapshot",
        "shardnum",
        "shardcount",
        "input",
        "s3",
        "url",
        "remote",
        "remotesecure",
        "cluster",
        "clusterallreplicas",
        "mysql",
        "postgresql",
        "jdbc",
        "odbc",
        "hdfs",
        "azureblobstorage",
        "gcs",
        "iceberg",
        "deltalake",
        "hudi",
        "executable",
        "mergetreeindex",
        "mergetreeprojection",
        "merge",
        "numbers",
        "loop",
        "view",
        "generaterandom",
        "zeros",
        "values",
        "filecluster",
        "redis",
        "mongodb",
        "sqlite",
    }
)
_AUDITOR_DENIED_PREFIXES = ("dict", "joinget", "current", "enabled", "getsetting", "getserver")

# The node kinds a SELECT over tables needs; anything else (EXPLAIN in a subquery, SETTINGS,
# query parameters, a statement kind nobody listed) is refused.
NODE_KINDS = frozenset(
    {
        SELECT,
        "SelectQuery",
        "ExpressionList",
        "TablesInSelectQuery",
        "TablesInSelectQueryElement",
        "TableExpression",
        "TableIdentifier",
        "TableJoin",
        "Subquery",
        "Function",
        "Identifier",
        "Literal",
        "Asterisk",
        "QualifiedAsterisk",
        "ColumnsRegexpMatcher",
        "ColumnsListMatcher",
        "QualifiedColumnsRegexpMatcher",
        "QualifiedColumnsListMatcher",
        "OrderByElement",
        "WithElement",
        "WindowDefinition",
        "WindowListElement",
        "ArrayJoin",
        "Alias",
        "InterpolateElement",
        "ColumnsTransformerList",
        "ColumnsExceptTransformer",
        "ColumnsReplaceTransformer",
        "ColumnsApplyTransformer",
        "ColumnsReplaceTransformer::Replacement",
        "SampleRatio",
    }
)

_READABLE_SQL = """
SELECT DISTINCT c.database || '.' || c.table
FROM system.columns AS c
INNER JOIN system.tables AS t ON t.database = c.database AND t.name = c.table
WHERE c.database = {db:String} AND c.name = 'tenant_id' AND t.engine != 'MaterializedView'
  AND NOT startsWith(c.table, '.inner')
"""
_TABLE_LINE_RE = re.compile(
    r"TABLE id: \d+(?:, alias: __table\d+)?, table_name: "
    r"([A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*)(?:, final: 1)?"
)
# The label over an operand of a comma join or ARRAY JOIN; the operand's own line follows.
_OPERAND_LABEL = "TABLE EXPRESSION"


def readable_tables(store: Store) -> frozenset[str]:
    """`db.table` of every table and view an auditor may read (see the module docstring)."""
    rows = store.query(_READABLE_SQL, {"db": DATABASE}).result_rows
    return frozenset(str(r[0]) for r in rows) - DENIED


def auditor_policy(tables: Iterable[str]) -> Policy:
    """The sqlguard policy of an auditor who may read `tables` (`db.table` names)."""
    return Policy(
        name="auditor query",
        statements=frozenset({SELECT}),
        databases=frozenset(),  # no database as a whole: the tables one by one
        tables=frozenset(tables),
        denied_functions=sqlguard.OPERATOR.denied_functions | _AUDITOR_DENIED,
        denied_function_prefixes=sqlguard.OPERATOR.denied_function_prefixes
        + _AUDITOR_DENIED_PREFIXES,
        unqualified_tables=True,  # CTE names; what they resolve to is checked by the analyzer
        node_kinds=NODE_KINDS,
    )


def resolved_tables(store: Store, statement: str) -> list[str]:
    """The tables `statement` reads once ClickHouse's analyzer resolved it. Raises
    `Unscoped` for a table function or a table line it cannot read exactly."""
    lines = [str(r[0]) for r in store.query("EXPLAIN QUERY TREE " + statement).result_rows]
    return tables_of_tree(lines)


class Unscoped(Exception):
    """The statement reads something whose scope cannot be proven."""


def tables_of_tree(lines: Sequence[str]) -> list[str]:
    """Tables named by the `TABLE` lines of a query-tree dump. Every line whose first word is a
    table node must be read exactly; lines forged by quoted names can only add names to check."""
    tables = []
    for line in lines:
        word = line.lstrip().split(" ", 1)[0]
        if word.startswith("TABLE_FUNCTION"):
            raise Unscoped("a table function is read")
        if word == "PREWHERE":  # runs before the tenant filter (module docstring)
            raise Unscoped("PREWHERE runs before the tenant scope; use WHERE")
        if word != "TABLE" or line.strip() == _OPERAND_LABEL:
            continue
        match = _TABLE_LINE_RE.fullmatch(line.strip())
        if match is None:
            raise Unscoped(f"a table read could not be identified: {line.strip()[:120]!r}")
        tables.append(match.group(1))
    return tables


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


# With this the auditor's conditions see only rows the filters kept (module docstring).
_FILTER_FIRST = "optimize_move_to_prewhere = 0"


def scope_settings(tables: Iterable[str], tenants: Sequence[str]) -> str:
    """`additional_table_filters = {...}`: `tenant_id IN (tenants)` on every table in `tables`,
    and the settings that make the engine apply them before any condition of the statement."""
    in_list = ", ".join(_quote(t) for t in sorted(tenants))
    condition = f"tenant_id IN ({in_list})"
    entries = ", ".join(f"{_quote(t)}: {_quote(condition)}" for t in sorted(tables))
    return f"additional_table_filters = {{{entries}}}, {_FILTER_FIRST}"
