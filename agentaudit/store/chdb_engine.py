"""One chDB session shared by every request of the embedded store server, one call at a time.

chDB sessions must not be used concurrently, and a session carries state (current database,
settings) that ClickHouse's HTTP interface scopes to a single query. `ChdbEngine` serialises
calls with a lock and gives each call the per-query database and settings it asked for,
restoring the session afterwards, so clients cannot leak state into each other.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# chDB reports errors as exceptions whose text is the server's own `Code: N. DB::Exception: ...`
# line; the code is only available there (no attribute), so it is parsed once, here.
_CODE_RE = re.compile(r"Code: (\d+)\. DB::Exception")
CHDB_ERRORS = (RuntimeError, ValueError)  # what chDB raises (ChdbError is a RuntimeError)
STD_EXCEPTION = 1001  # ClickHouse's code for an error with no code of its own
NOT_IMPLEMENTED = 48
NETWORK_ERROR = 210  # clients treat it as "unavailable, retry"
QUERY_WAS_CANCELLED = 394

Abandoned = Callable[[], bool]
"""Whether the caller of a call has gone (closed its connection). See `CallerGone`."""

# Settings that only a server would apply after the query (read-only mode) cannot be undone
# on a shared session: `SET readonly = 1` would lock every later caller out.
_UNRESTORABLE = frozenset({"readonly"})
_USE_RE = re.compile(rb"\s*USE\s", re.IGNORECASE)
_SET_RE = re.compile(rb"\s*SET\s", re.IGNORECASE)
_SELECT_RE = re.compile(rb"\s*(SELECT|WITH)\b", re.IGNORECASE)
TRAILING_FORMAT_RE = re.compile(rb"\bFORMAT\s+(\w+)\s*;?\s*\Z", re.IGNORECASE)
# Errors raised in this process (not received from remote servers), to detect insert failures
# that chDB's streaming insert does not report (see `ChdbEngine._raise_swallowed`).
# "Raised by a query": a query id that is not a background merge's or mutation's, which
# ClickHouse names `<table uuid>::<part>` (a merge cancelled by a DROP or TRUNCATE counts
# ABORTED under such an id, at any moment: it was blamed on the insert running then).
_ERRORS_SQL = (
    "SELECT code, value, name, last_error_message, query_id != '' AND position(query_id, '::') = 0 "
    "FROM system.errors WHERE NOT remote"
)


ErrorCounts = dict[int, tuple[int, str, str, bool]]
"""code → (times raised, name, last message, last raised by a query), from `system.errors`."""


class EngineError(Exception):
    """A ClickHouse exception from chDB, with its numeric code and the server-style text."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @classmethod
    def wrap(cls, exc: BaseException) -> EngineError:
        text = str(exc)
        match = _CODE_RE.search(text)
        if match is None:
            return cls(
                STD_EXCEPTION, f"Code: {STD_EXCEPTION}. DB::Exception: {text}. (STD_EXCEPTION)"
            )
        return cls(int(match.group(1)), text[match.start() :].strip())


class CallerGone(EngineError):
    """The caller closed its connection before its call ran (or before its insert finished),
    so the call is not run: nobody would learn its outcome.

    A client that stops waiting (a read timeout: 300 s for the sink's client) retries its
    insert; the abandoned request, queued on the session behind a long query, then stored
    the same rows too (measured: 3 rows inserted once by the client, stored 6 times).
    """

    def __init__(self) -> None:
        super().__init__(
            QUERY_WAS_CANCELLED,
            f"Code: {QUERY_WAS_CANCELLED}. DB::Exception: The client closed the connection "
            "before its statement ran; not run. (QUERY_WAS_CANCELLED)",
        )


def _check_caller(abandoned: Abandoned | None) -> None:
    if abandoned is not None and abandoned():
        raise CallerGone()


@dataclass
class Outcome:
    """A finished call: the result bytes (a zero-copy view for queries) and HTTP-style summary."""

    body: memoryview | bytes = b""
    summary: dict[str, str] = field(default_factory=dict)
    keep_alive: Any = None  # the chDB result object backing `body`; must outlive the write


class ChdbEngine:
    """A chDB session on `path`, safe to call from many threads."""

    def __init__(self, path: Path, session_settings: Mapping[str, str] | None = None) -> None:
        """Open the session; EngineError if chDB refuses (e.g. another directory is open here).

        `session_settings` become the session's own values: what a call does not ask for.
        """
        self._lock = threading.Lock()
        self._database: str | None = None  # None: unknown, `USE` before the next call
        self._restore: dict[str, str] = {}
        self._closed = False
        self._counts_after: ErrorCounts | None = None
        """`system.errors` right after the last call, if it was an insert (see `insert`)."""
        # Imported here, not at the top: only the store's owner needs chDB, and importing it
        # loads its native library, pyarrow and numpy (~0.45 s of CPU) into every process that
        # imports the store package, sink processes and CLI commands attached over HTTP too.
        import chdb.session

        try:
            self._session = chdb.session.Session(str(path))
        except CHDB_ERRORS as exc:
            raise EngineError.wrap(exc) from None
        try:
            for name, value in (session_settings or {}).items():
                self._session.query(f"SET {_ident(name)} = {_literal(value)}", "TabSeparated")
            self._values = self._current_settings()
            version_tz = self._session.query("SELECT version(), timezone()", "TabSeparated").bytes()
        except CHDB_ERRORS as exc:
            self._session.close()
            raise EngineError.wrap(exc) from None
        self.version, self.timezone = version_tz.decode().strip().split("\t")

    def _current_settings(self) -> dict[str, str]:
        """Each setting's value and how to put it back: `DEFAULT` unless the session changed it."""
        rows = self._session.query(
            "SELECT name, value, changed FROM system.settings", "TabSeparated"
        )
        values: dict[str, str] = {}
        for line in rows.bytes().decode().splitlines():
            name, value, changed = line.split("\t")
            values[name] = value
            self._restore[name] = _literal(value) if changed == "1" else "DEFAULT"
        return values

    def query(
        self,
        sql: bytes,
        fmt: str,
        params: Mapping[str, str],
        database: str,
        settings: Mapping[str, str],
        abandoned: Abandoned | None = None,
    ) -> Outcome:
        """Run one statement whose output format is `fmt` (its FORMAT clause, or the default).

        `abandoned`: asked once the session is held; true raises `CallerGone`, nothing run."""
        start = time.perf_counter_ns()
        with self._scope(database, settings, abandoned):
            try:
                result = self._session.query(sql, fmt, params=dict(params))
                size = result.size()
                # chDB writes nothing at all for an empty Native result where a server sends
                # a header block; clients then lose the column names and types.
                header = b"" if size or fmt != "Native" else self._empty_header(sql, params)
                if _USE_RE.match(sql):
                    self._database = None  # re-`USE` the database the next request asks for
                elif _SET_RE.match(sql):
                    self._reset_settings()  # over HTTP without a session, SET lasts one query
            except CHDB_ERRORS as exc:
                raise EngineError.wrap(exc) from None
        summary = {
            "read_rows": str(result.rows_read()),
            "read_bytes": str(result.bytes_read()),
            "written_rows": "0",
            "written_bytes": "0",
            "result_bytes": str(size or len(header)),
            "elapsed_ns": str(time.perf_counter_ns() - start),
        }
        body = result.get_memview().view() if size else header  # zero-copy; `result` owns it
        return Outcome(body, summary, keep_alive=result)

    def _empty_header(self, sql: bytes, params: Mapping[str, str]) -> bytes:
        """A zero-row Native block naming the columns a SELECT would return (DESCRIBE: no scan)."""
        if not _SELECT_RE.match(sql):
            return b""
        inner = TRAILING_FORMAT_RE.sub(b"", sql).rstrip().rstrip(b";")
        describe = b"DESCRIBE TABLE (" + inner + b"\n)"
        try:
            described = self._session.query(describe, "TabSeparated", params=dict(params))
        except CHDB_ERRORS:  # the statement itself succeeded; a nameless empty result is right
            return b""
        block = bytearray(_leb128(len(described.bytes().splitlines())) + _leb128(0))
        for line in described.bytes().splitlines():
            for text in line.split(b"\t")[:2]:  # name, type
                text = _unescape_tsv(text)
                block += _leb128(len(text)) + text
        return bytes(block)

    def insert(
        self,
        statement: str,
        fmt: str,
        chunks: Iterable[bytes],
        database: str,
        settings: Mapping[str, str],
        abandoned: Abandoned | None = None,
    ) -> Outcome:
        """Stream `chunks` of `fmt`-encoded data into `statement` (an INSERT without FORMAT).

        `abandoned`: asked once the session is held and again before the insert is finished;
        true raises `CallerGone`, nothing stored."""
        start = time.perf_counter_ns()
        with self._scope(database, settings, abandoned) as previous:
            # The counts after the previous call, when that was an insert that succeeded: no
            # statement ran since (every call goes through `_scope`), so they are still the
            # counts before this one. Saves one `system.errors` query (1.5-6 ms) per insert.
            before = previous if previous is not None else self._error_counts()
            try:
                inserter = self._session.send_insert(statement, fmt)
            except CHDB_ERRORS as exc:
                raise EngineError.wrap(exc) from None
            try:
                for chunk in chunks:
                    inserter.append(chunk)
                _check_caller(abandoned)  # the data may all have been buffered before it left
                done = inserter.finish()
            except BaseException as exc:
                inserter.cancel()  # idempotent; a finished inserter ignores it
                if isinstance(exc, CHDB_ERRORS):
                    raise EngineError.wrap(exc) from None
                raise
            self._counts_after = self._raise_swallowed(before)
        return Outcome(
            b"",
            {
                "read_rows": "0",
                "read_bytes": "0",
                "written_rows": str(done.rows_written),
                "written_bytes": str(done.bytes_written),
                "elapsed_ns": str(time.perf_counter_ns() - start),
            },
        )

    def _error_counts(self) -> ErrorCounts:
        """code → (times raised, name, last message, last raised by a query), `system.errors`."""
        try:
            result = self._session.query(_ERRORS_SQL, "JSONCompactEachRow")
        except CHDB_ERRORS as exc:
            raise EngineError.wrap(exc) from None
        counts: ErrorCounts = {}
        for line in result.bytes().splitlines():
            # Messages may quote the data (any bytes); ClickHouse does not re-encode them.
            code, value, name, message, in_query = json.loads(line.decode("utf-8", "replace"))
            counts[int(code)] = (int(value), name, message, bool(in_query))
        return counts

    def _raise_swallowed(self, before: ErrorCounts) -> ErrorCounts:
        """Raise the error an insert hit after chDB's `finish()` reported success; else
        return the counts now.

        chDB 4.4's streaming insert drops exceptions thrown while the parsed blocks are
        written (a materialized view that throws, a CHECK constraint, error 252 "too many
        partitions"): nothing is stored, yet it returns rows_written. Every DB::Exception
        counts itself in `system.errors`, and this session runs one call at a time under
        `_lock`, so a count that grew during the insert, last raised by a query (not by a
        background merge or mutation), is the insert's own failure.
        """
        now = self._error_counts()
        grown = [
            (code, name, message)
            for code, (value, name, message, in_query) in sorted(now.items())
            if in_query and value > before.get(code, (0, "", "", False))[0]
        ]
        if not grown:
            return now
        code, name, message = grown[0]
        others = f" (and {len(grown) - 1} more error(s))" if len(grown) > 1 else ""
        raise EngineError(
            code,
            f"Code: {code}. DB::Exception: {message.rstrip('. ')} (the insert failed although "
            f"chDB reported it done){others}. ({name})",
        )

    @contextmanager
    def _scope(
        self, database: str, settings: Mapping[str, str], abandoned: Abandoned | None = None
    ) -> Iterator[ErrorCounts | None]:
        """Hold the session with `database` current and `settings` applied, then restore them.
        `CallerGone` if `abandoned()` once the session is held (a call may wait long for it).

        Yields `system.errors` as the previous call left them if it was a successful insert
        (None otherwise: any other statement may have raised and counted errors).
        """
        with self._lock:
            previous, self._counts_after = self._counts_after, None
            if self._closed:
                raise EngineError(
                    NETWORK_ERROR,
                    f"Code: {NETWORK_ERROR}. DB::Exception: The embedded store is shutting down; "
                    "reconnect to its next owner. (NETWORK_ERROR)",
                )
            _check_caller(abandoned)
            if database != self._database:
                previous = None  # a statement ran in between
                self._run(f"USE `{database.replace('`', '``')}`")
                self._database = database
            changed = {k: v for k, v in settings.items() if self._values.get(k) != v}
            blocked = _UNRESTORABLE.intersection(changed)
            if blocked:
                raise EngineError(
                    NOT_IMPLEMENTED,
                    f"Code: {NOT_IMPLEMENTED}. DB::Exception: Setting {min(blocked)} is not "
                    "supported per query by the embedded store server. (NOT_IMPLEMENTED)",
                )
            applied: list[str] = []
            try:
                for name, value in changed.items():
                    self._run(f"SET {_ident(name)} = {_literal(value)}")
                    applied.append(name)
                yield None if applied else previous
            finally:
                if applied:  # statements run after the call: its counts are not the next's
                    self._counts_after = None
                for name in applied:
                    self._run(f"SET {name} = {self._restore.get(name, 'DEFAULT')}")

    def _reset_settings(self) -> None:
        """Put back every setting a client's `SET` statement changed on the shared session."""
        changed = self._session.query(
            "SELECT name, value FROM system.settings WHERE changed", "TabSeparated"
        )
        for line in changed.bytes().decode().splitlines():
            name, value = line.split("\t")
            if self._values.get(name) != value:
                self._run(f"SET {name} = {self._restore.get(name, 'DEFAULT')}")

    def _run(self, sql: str) -> None:
        try:
            self._session.query(sql, "TabSeparated")
        except CHDB_ERRORS as exc:
            raise EngineError.wrap(exc) from None

    def close(self) -> None:
        """Close the session once no call is running; chDB releases the directory lock."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._session.close()


def _ident(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise EngineError(
            115, f"Code: 115. DB::Exception: Unknown setting '{name}'. (UNKNOWN_SETTING)"
        )
    return name


def _literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _leb128(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _unescape_tsv(text: bytes) -> bytes:
    """Undo TabSeparated escaping (column names with odd characters, types with quotes)."""
    if b"\\" not in text:
        return text
    return text.decode("unicode_escape").encode("latin-1")
