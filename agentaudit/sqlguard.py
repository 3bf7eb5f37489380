"""Read-only SQL: a verdict on one statement from ClickHouse's own parser, then a fenced run.

`check(store, sql, policy)` never runs the statement. It asks the store (chDB or a server,
the same two requests) to:

1. re-print it with `formatQuerySingleLine({sql:String})`: the statement travels as a bound
   parameter, so it cannot change the request; ClickHouse refuses several statements and
   syntax errors, and drops comments. The canonical text is what is judged and what runs.
2. dump its syntax tree with `EXPLAIN AST <canonical> FORMAT Native` (what clickhouse-connect
   appends anyway, written out so a statement ending in `LIMIT 0` is not taken for its
   columns-only probe), or, for a statement with a FORMAT of its own, `EXPLAIN AST
   <canonical>`: clickhouse-connect's `FORMAT Native` then binds to the EXPLAIN, so the
   statement cannot choose how the tree comes back.

`judge(lines, policy)` turns the tree into a `Verdict`. The tree is verified before it is
trusted: one root and every node with exactly the children it declares. Identifiers are
printed unescaped in the dump (a quoted name may hold a newline and fake lines), so every
rule is local: it looks at a line's own text, or at the line that ClickHouse prints right
after a node that carries no name (`TableExpression`). Injected lines can only add refusals.

Known dump behaviour: a SETTINGS clause that holds nothing but `limit`/`offset` is turned into
LIMIT/OFFSET by ClickHouse and leaves no `Set` node; any other setting keeps the node. That
remainder is harmless (it only limits rows).

`run_readonly` runs an allowed statement wrapped in a SETTINGS clause with `readonly = 1` and
resource limits, on both paths (the embedded engine cannot scope `readonly` passed as an HTTP
setting), so a gap in the rules is not the only wall.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import pairwise

from agentaudit.errors import BadQuery, StoreUnavailable
from agentaudit.store.client import refused_statement
from agentaudit.store.protocol import QueryResult, Store

SELECT = "SelectWithUnionQuery"
DESCRIBE = "DescribeQuery"
SHOW = "ShowTables"  # SHOW TABLES / DATABASES / DICTIONARIES / SETTINGS: name lists only
EXISTS = "ExistsTableQuery"

# How the statement kinds of the dump read in SQL, for messages.
_KIND_SQL = {
    "InsertQuery": "INSERT",
    "AlterQuery": "ALTER",
    "DeleteQuery": "DELETE",
    "UpdateQuery": "UPDATE",
    "TruncateQuery": "TRUNCATE",
    "DropQuery": "DROP",
    "CreateQuery": "CREATE",
    "Rename": "RENAME/EXCHANGE",
    "OptimizeQuery": "OPTIMIZE",
    "SYSTEM": "SYSTEM",
    "Set": "SET",
    "UseQuery": "USE",
    "KillQueryQuery": "KILL",
    "GrantQuery": "GRANT/REVOKE",
    "DetachQuery": "DETACH",
    "UndropQuery": "UNDROP",
    "CheckQuery": "CHECK",
    "Explain": "EXPLAIN",
    "BackupQuery": "BACKUP/RESTORE",
    "ShowProcesslistQuery": "SHOW PROCESSLIST",
    "ShowCreateTableQuery": "SHOW CREATE",
    "WatchQuery": "WATCH",
    "ShowColumns": "SHOW COLUMNS",
}
_WRITES = frozenset(
    {
        "InsertQuery",
        "AlterQuery",
        "DeleteQuery",
        "UpdateQuery",
        "TruncateQuery",
        "DropQuery",
        "CreateQuery",
        "Rename",
        "OptimizeQuery",
        "SYSTEM",
        "KillQueryQuery",
        "GrantQuery",
        "DetachQuery",
        "UndropQuery",
        "BackupQuery",
    }
)
_WRITE_HINT = (
    "the trail is append-only and only the sink writes it; `agentaudit migrate` changes the "
    "schema, `agentaudit budgets` and `agentaudit block` change the controls"
)
# Functions whose right-hand argument may name a table (`x IN db.t`).
_IN_FUNCTIONS = frozenset(
    {
        "in",
        "notin",
        "globalin",
        "globalnotin",
        "nullin",
        "notnullin",
        "globalnullin",
        "globalnotnullin",
    }
)
_CHILDREN_RE = re.compile(r" \(children (\d+)\)$")
_PLAIN_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?")


@dataclass(frozen=True)
class Policy:
    """What a caller may read. Function names compare lower-cased (ClickHouse resolves many
    case-insensitively), database and table names exactly (ClickHouse does)."""

    name: str
    statements: frozenset[str]
    databases: frozenset[str]
    tables: frozenset[str] = frozenset()  # `db.table` allowed outside `databases`
    denied_functions: frozenset[str] = frozenset()
    denied_function_prefixes: tuple[str, ...] = ()
    # Unqualified names are CTEs or tables of the connection's database: not visible in the
    # dump (a WithElement prints no name), so a policy can only allow or refuse them all.
    unqualified_tables: bool = True
    # When set, every node of the tree must be of one of these kinds (fail closed: a construct
    # the policy's author did not think of is refused, not judged by rules that miss it).
    node_kinds: frozenset[str] | None = None


# Scalar functions that read files, other servers, dictionaries (whose source may be another
# server) or other tables by name, or echo the request's credentials.
_REACHING_OUT = frozenset(
    {
        "file",
        "hascolumnintable",
        "catboostevaluate",
        "modelevaluate",
        "getclienthttpheader",
        "currentrequesturl",
        "generateserialid",
    }
)

OPERATOR = Policy(
    name="agentaudit query",
    statements=frozenset({SELECT, DESCRIBE, SHOW, EXISTS}),
    databases=frozenset({"agentaudit"}),
    # Storage introspection operators need; not query_log, processes, users, named_collections
    # and other tables that hold other people's statements or credentials.
    tables=frozenset(
        {"system.one", "system.tables", "system.columns", "system.parts", "system.databases"}
    ),
    denied_functions=_REACHING_OUT,
    # aiGenerate, AIClassify, ...: send their arguments to the LLM provider (an HTTP endpoint)
    # of a named collection, which the parameter map's `credentials` may name.
    denied_function_prefixes=("dict", "joinget", "ai"),
)


@dataclass(frozen=True)
class Verdict:
    """The outcome of `check`: `statement` is the canonical text to run (or that was refused)."""

    allowed: bool
    reason: str
    statement: str
    kind: str


@dataclass(frozen=True)
class Limits:
    """Resource limits of one read-only run. The embedded store serialises every call, so a
    long query also delays the sink's inserts: keep `max_seconds` short."""

    max_seconds: float = 30.0
    max_rows: int = 1_000_000
    max_memory_bytes: int = 4 << 30
    # The HTTP endpoint holds a result until its client has read it: without a bound, two
    # auditors reading slowly held 3.4 GB in the store owner (the sink's process).
    max_result_bytes: int = 256 << 20

    def clause(self, first: str = "") -> str:
        """The SETTINGS clause; `first` (settings text) goes before `readonly`, which locks
        every setting after it."""
        # Overflow modes are explicit: a server profile set to `break` would truncate silently.
        lead = f"{first}, " if first else ""
        return (
            f"SETTINGS {lead}readonly = 1, max_execution_time = {self.max_seconds:g}, "
            f"timeout_overflow_mode = 'throw', max_result_rows = {int(self.max_rows)}, "
            f"max_result_bytes = {int(self.max_result_bytes)}, "
            f"result_overflow_mode = 'throw', max_memory_usage = {int(self.max_memory_bytes)}"
        )


@dataclass
class _Node:
    depth: int
    kind: str
    text: str  # the rest of the line after the kind
    declared: int
    children: list[_Node] = field(default_factory=list)

    def walk(self) -> Iterator[_Node]:
        yield self
        for child in self.children:
            yield from child.walk()


class _Refused(Exception):
    pass


def check(store: Store, sql: str, policy: Policy = OPERATOR) -> Verdict:
    """ClickHouse's parser on `sql`, then `judge`. Raises BadQuery for text ClickHouse cannot
    parse as one statement, StoreUnavailable when the store is down."""
    try:
        rows = store.query("SELECT formatQuerySingleLine({sql:String})", {"sql": sql}).result_rows
    except BadQuery as exc:
        # The parser's own sentence; the wrapper it names is ours, not the user's.
        raise BadQuery(str(exc).split(". : In scope")[0].split(": In scope")[0]) from None
    canonical = str(rows[0][0])
    try:
        # The FORMAT clickhouse-connect would append, written out: a text ending in `LIMIT 0`
        # is otherwise its "columns only" probe, which fails when rows (the dump) come back.
        dump = store.query(f"EXPLAIN AST {canonical} FORMAT Native").result_rows
    except BadQuery:  # the statement has a FORMAT of its own, so it does not end in LIMIT 0
        dump = store.query("EXPLAIN AST " + canonical).result_rows
    return judge([str(row[0]) for row in dump], canonical, policy)


def judge(lines: Sequence[str], statement: str, policy: Policy = OPERATOR) -> Verdict:
    """The verdict on an `EXPLAIN AST` dump (one line per element of `lines`)."""
    root = _tree(lines)
    if root is None:
        return Verdict(
            False,
            f"refused: the parser's answer could not be verified; "
            f"{policy.name} runs only statements it can check",
            statement,
            "",
        )
    try:
        _judge_root(root, policy)
        _judge_following(lines, policy)
        for node in root.walk():
            _judge_node(node, policy)
    except _Refused as exc:
        return Verdict(False, f"refused: {exc}", statement, root.kind)
    return Verdict(True, "allowed", statement, root.kind)


def _tree(lines: Sequence[str]) -> _Node | None:
    """The dump as a tree; None unless it has one root and every declared child count holds."""
    stack: list[_Node] = []
    root: _Node | None = None
    for line in lines:
        depth = len(line) - len(line.lstrip(" "))
        kind, _, text = line[depth:].partition(" ")
        match = _CHILDREN_RE.search(line)
        node = _Node(depth, kind, text, int(match.group(1)) if match else 0)
        if root is None:
            if depth != 0:
                return None
            root = node
        elif depth == 0 or depth > stack[-1].depth + 1:
            return None  # a second root, or a jump in indentation
        else:
            while stack[-1].depth >= depth:
                stack.pop()
            stack[-1].children.append(node)
        stack.append(node)
    if root is None or any(len(n.children) != n.declared for n in root.walk()):
        return None
    return root


def _judge_root(root: _Node, policy: Policy) -> None:
    if root.kind not in policy.statements:
        sql = _KIND_SQL.get(root.kind, f"a {root.kind} statement")
        hint = _WRITE_HINT if root.kind in _WRITES else _allowed_statements(policy)
        if root.kind in ("Set", "UseQuery"):
            hint = "settings and the current database are fixed; name tables as agentaudit.<table>"
        raise _Refused(f"{sql} is not allowed in {policy.name} (read-only); {hint}")
    for child in root.children:
        if child.kind == "Set":
            raise _Refused(_settings_message(policy))
        if child.kind == "Literal":
            raise _Refused(
                f"INTO OUTFILE is not allowed in {policy.name}; redirect the output "
                "instead (--format csv > file)"
            )
        if root.kind in (SHOW, EXISTS) and child.kind == "Identifier":
            continue  # database and table names (and the client's FORMAT Native)
        if child.kind == "Identifier" and child.text != "Native":
            raise _Refused(f"a FORMAT clause is not allowed in {policy.name}; use --format")
        if child.kind not in ("Identifier", "ExpressionList", "TableExpression"):
            raise _Refused(f"a {child.kind} clause is not allowed in {policy.name}")


def _judge_node(node: _Node, policy: Policy) -> None:
    if policy.node_kinds is not None and node.kind not in policy.node_kinds:
        raise _Refused(
            f"{_KIND_SQL.get(node.kind, node.kind)} is not allowed in {policy.name}; "
            "it reads SELECT statements over its tables only"
        )
    if node.kind == "Set":
        raise _Refused(_settings_message(policy))
    if node.kind == "TableIdentifier":
        _judge_table(node.text, policy)
    elif node.kind == "Function":
        name = node.text.split(" ", 1)[0]
        lowered = name.lower()
        prefixes = policy.denied_function_prefixes
        if lowered in policy.denied_functions or lowered.startswith(prefixes):
            raise _Refused(
                f"function {name}() is not allowed in {policy.name}: it reads outside "
                "the trail (files, dictionaries, other tables or servers)"
            )
        if lowered in _IN_FUNCTIONS and node.children and len(node.children[0].children) == 2:
            right = node.children[0].children[1]
            if right.kind == "Identifier":  # `x IN db.t` reads a table
                _judge_table(right.text, policy)


def _judge_following(lines: Sequence[str], policy: Policy) -> None:
    """A table source must be a table or a subquery: the line ClickHouse prints right after a
    `TableExpression` is its source, and a `TableExpression` line carries no name to forge."""
    for line, following in pairwise(lines):
        if line.strip().split(" ", 1)[0] != "TableExpression":
            continue
        kind, _, text = following.strip().partition(" ")
        if kind not in ("TableIdentifier", "Subquery"):
            name = text.split(" ", 1)[0] if kind == "Function" else kind
            raise _Refused(
                f"table function {name}() is not allowed in {policy.name}: table "
                "functions reach files, URLs, other servers or other tables; read "
                "the agentaudit tables"
            )


def _judge_table(text: str, policy: Policy) -> None:
    match = _PLAIN_NAME_RE.match(text)
    rest = text[match.end() :] if match else text
    if match is None or (rest and not rest.startswith(" (")):
        raise _Refused(
            f"the table name {text.split(' (')[0]!r} is not a plain name; "
            f"{policy.name} reads {_scope(policy)}"
        )
    name = match.group(0)
    database, dot, _ = name.partition(".")
    if not dot:
        if policy.unqualified_tables:
            return
        raise _Refused(f"name every table with its database in {policy.name} ({_scope(policy)})")
    if database not in policy.databases and name not in policy.tables:
        raise _Refused(f"table {name} is outside what {policy.name} reads ({_scope(policy)})")


def _scope(policy: Policy) -> str:
    tables = ", ".join(sorted(policy.tables))
    databases = ", ".join(f"{db}.*" for db in sorted(policy.databases))
    return " and ".join(part for part in (databases, tables) if part)


def _settings_message(policy: Policy) -> str:
    return f"a SETTINGS clause is not allowed in {policy.name}: it could lift the read-only limits"


def _allowed_statements(policy: Policy) -> str:
    names = {SELECT: "SELECT", DESCRIBE: "DESCRIBE", SHOW: "SHOW TABLES", EXISTS: "EXISTS"}
    allowed = [names.get(kind, kind) for kind in sorted(policy.statements, key=list(names).index)]
    return "only " + ", ".join(allowed) + " can run here"


# Limits the statement ran into: the user's to fix, not the store's (exit code of BadQuery).
_LIMIT_CODES = {
    159: "it ran longer than {s:g} s",  # TIMEOUT_EXCEEDED
    158: "it returned more than {r} rows",  # TOO_MANY_ROWS
    396: "it returned more than {r} rows or {b} MiB",  # TOO_MANY_ROWS_OR_BYTES
    241: "it needed more than {m} MiB of memory",  # MEMORY_LIMIT_EXCEEDED
}


def run_readonly(
    store: Store, sql: str, policy: Policy = OPERATOR, limits: Limits | None = None
) -> QueryResult:
    """Check `sql` and run it read-only within `limits`; BadQuery (exit code 5) when refused."""
    limits = limits or Limits()
    verdict = check(store, sql, policy)
    if not verdict.allowed:
        raise BadQuery(verdict.reason)
    try:
        return store.query(fence(verdict, limits))
    except Exception as exc:
        # The statement is the caller's: an error it ran into is theirs to fix, one line and
        # exit code 5 (a code the store client leaves unclassified was a traceback, exit 1).
        stopped = stopped_by_limit(exc, limits, policy) or refused_statement(exc)
        if stopped is None:
            raise
        raise stopped from exc


def fence(verdict: Verdict, limits: Limits, first: str = "") -> str:
    """The allowed statement of `verdict` as it runs: read-only within `limits`, with the
    settings text `first` (e.g. the auditor's `additional_table_filters`) before `readonly`."""
    if verdict.kind == SELECT:
        # A wrapping SELECT takes the settings for the whole statement; appended to a UNION
        # whose last part is parenthesised they would not reach every part.
        return f"SELECT * FROM (\n{verdict.statement}\n) {limits.clause(first)}"
    return f"{verdict.statement} {limits.clause(first)}"


def stopped_by_limit(exc: Exception, limits: Limits, policy: Policy) -> BadQuery | None:
    """BadQuery naming the limit the statement ran into, or None for any other error. The store
    client maps some of these codes to StoreUnavailable and leaves others unclassified."""
    code = getattr(
        exc.__cause__ if isinstance(exc, (BadQuery, StoreUnavailable)) else exc, "code", None
    )
    if code not in _LIMIT_CODES:
        return None
    why = _LIMIT_CODES[code].format(
        s=limits.max_seconds,
        r=limits.max_rows,
        m=limits.max_memory_bytes >> 20,
        b=limits.max_result_bytes >> 20,
    )
    return BadQuery(f"stopped: {why} ({policy.name} limit); narrow the query")
