"""Statement-level pieces of the embedded store server: where an INSERT's data starts, and
whether a request holds several statements (a server refuses those)."""

from __future__ import annotations

import re

from agentaudit.store.chdb_engine import EngineError

# `INSERT INTO t (cols) [SETTINGS ...] FORMAT F` then the data, which starts after spaces and
# at most one newline (ClickHouse's rule, so binary data starting with whitespace is kept).
INSERT_RE = re.compile(
    rb"\A\s*(INSERT\s+INTO\s.*?)\sFORMAT\s+(\w+)[ \t\f]*\r?\n?", re.IGNORECASE | re.DOTALL
)
_NOT_DATA_RE = re.compile(rb"\b(VALUES|SELECT|WITH)\b", re.IGNORECASE)
# Literals, quoted names, comments and heredocs, where a `;` does not end a statement. Where
# this is cruder than ClickHouse's lexer (nested comments), it errs towards "several".
_OPAQUE_RE = re.compile(
    rb"""'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.|"")*"|`(?:[^`\\]|\\.|``)*`"""
    rb"""|--[^\n]*|\#[ !][^\n]*|/\*.*?\*/|\$(\w*)\$.*?\$\1\$""",
    re.DOTALL,
)
SYNTAX_ERROR = 62


def split_insert(head: bytes) -> tuple[str, str, int] | None:
    """(statement without FORMAT, format, offset where the data starts) for a data INSERT.

    None for anything else, including `INSERT ... VALUES` and `INSERT ... SELECT`, which
    chDB runs as ordinary statements.
    """
    match = INSERT_RE.match(head)
    if match is None or _NOT_DATA_RE.search(match.group(1)):
        return None
    return match.group(1).decode(), match.group(2).decode(), match.end()


def several_statements(sql: bytes) -> bool:
    """Whether `sql` holds more than one statement. A server's HTTP interface refuses those;
    chDB would run them all (even after an EXPLAIN), so the server must refuse them too."""
    return re.search(rb";\s*\S", _OPAQUE_RE.sub(b" ", sql)) is not None


def refuse_several(sql: bytes) -> None:
    if several_statements(sql):
        raise EngineError(
            SYNTAX_ERROR,
            "Code: 62. DB::Exception: Syntax error (Multi-statements are not allowed): send one "
            "statement per request. (SYNTAX_ERROR)",
        )
