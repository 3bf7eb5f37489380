"""The chDB store of the embedded server: a read lane and a write lane on one data directory.

chDB sessions must not be used concurrently, so each lane (`chdb_lane.Lane`) runs one call at
a time. Reads (SELECT, WITH, DESCRIBE, SHOW, EXISTS, EXPLAIN) take one of `READ_LANES` read
lanes, everything else (inserts, DDL, commands) the write lane: a reader's long query no longer
queues the sink's inserts (on one shared session `SELECT 1` waited 1.95 s behind a 2.5 s query,
and an auditor's 30 s statement was a 30 s stall of the trail's ingest).
"""

from __future__ import annotations

import json
import queue
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentaudit.store.chdb_lane import (
    CHDB_ERRORS,
    NETWORK_ERROR,
    NOT_IMPLEMENTED,
    QUERY_WAS_CANCELLED,
    STD_EXCEPTION,
    Abandoned,
    CallerGone,
    EngineError,
    Lane,
    check_caller,
)

__all__ = [
    "CHDB_ERRORS",
    "NETWORK_ERROR",
    "NOT_IMPLEMENTED",
    "QUERY_WAS_CANCELLED",
    "STD_EXCEPTION",
    "TRAILING_FORMAT_RE",
    "Abandoned",
    "CallerGone",
    "ChdbEngine",
    "EngineError",
    "Outcome",
]

_USE_RE = re.compile(rb"\s*USE\s", re.IGNORECASE)
_SET_RE = re.compile(rb"\s*SET\s", re.IGNORECASE)
_SELECT_RE = re.compile(rb"\s*(SELECT|WITH)\b", re.IGNORECASE)
READ_LANES = 4
"""Reads that run at once; more wait for a read lane (never for the write lane)."""
# Statements that only read run on a read lane; so does KILL (QUERY, MUTATION), which on the
# write lane waited behind the very statement it was sent to stop (an INSERT ... SELECT, an
# OPTIMIZE, a synchronous mutation: each stalls the sink's inserts while it runs).
_READ_RE = re.compile(rb"\s*(SELECT|WITH|DESCRIBE|DESC|SHOW|EXISTS|EXPLAIN|KILL)\b", re.IGNORECASE)
TRAILING_FORMAT_RE = re.compile(rb"\bFORMAT\s+(\w+)\s*;?\s*\Z", re.IGNORECASE)
# Errors raised in this process (not received from remote servers), to detect insert failures
# that chDB's streaming insert does not report (see `ChdbEngine._raise_swallowed`).
# "Raised by a query": a query id that is not a background merge's or mutation's, which
# ClickHouse names `<table uuid>::<part>` (a merge cancelled by a DROP or TRUNCATE counts
# ABORTED under such an id, at any moment: it was blamed on the insert running then).
_ERRORS_SQL = (
    "SELECT code, value, name, last_error_message, "
    "query_id != '' AND position(query_id, '::') = 0, query_id FROM system.errors WHERE NOT remote"
)
# The running insert's query id (inserts run on the write lane only, one at a time).
_INSERT_ID_SQL = (
    "SELECT query_id FROM system.processes WHERE query_kind = 'Insert' AND is_initial_query"
)


ErrorCounts = dict[int, tuple[int, str, str, bool, str]]
"""code → (times raised, name, last message, last raised by a query, its query id), from
`system.errors`."""


# Formats whose streamed blocks make the whole result when joined (chDB's streamed JSON,
# ...WithNames and Pretty repeat their header per block, and drop it for an empty result).
_STREAMED_FORMATS = frozenset(
    {"Native", "RowBinary", "TabSeparated", "TSV", "CSV", "JSONEachRow", "JSONCompactEachRow"}
)
STREAM_AFTER = 1 << 20
"""A SELECT's result (in a format of `_STREAMED_FORMATS`, Native among them) is gathered up to
this many bytes; a larger one is streamed (`Outcome.rest`) block by block: held whole, one
result took ~3.6x its size of the owner's memory."""


@dataclass
class Outcome:
    """A finished call: the result bytes (a zero-copy view for queries) and HTTP-style summary.

    A result larger than `STREAM_AFTER` comes as its first part (`body`) and the `rest`, read
    from chDB as it is sent; it holds a read lane until the rest is read or `close()` is called
    (always call it). The summary then counts the first part only."""

    body: memoryview | bytes = b""
    summary: dict[str, str] = field(default_factory=dict)
    keep_alive: Any = None  # the chDB result object backing `body`; must outlive the write
    rest: Iterator[bytes] | None = None
    close: Callable[[], None] = lambda: None
    limit: int | None = None  # the most bytes the caller may be sent (None: the server's own)


class ChdbEngine:
    """chDB sessions on `path` (read lanes, a write lane), safe to call from many threads."""

    def __init__(self, path: Path, session_settings: Mapping[str, str] | None = None) -> None:
        """Open the sessions; EngineError if chDB refuses (e.g. another directory is open here).

        `session_settings` become the sessions' own values: what a call does not ask for.
        """
        # Imported here, not at the top: only the store's owner needs chDB, and importing it
        # loads its native library, pyarrow and numpy (~0.45 s of CPU) into every process that
        # imports the store package, sink processes and CLI commands attached over HTTP too.
        import chdb.session

        self._counts_after: tuple[ErrorCounts, int] | None = None
        """`system.errors` right after the last call, if it was an insert that succeeded with
        no read running, and how many reads had started then (see `insert`)."""
        # Reads started and running, and the end of an insert (its error check), during which
        # no read starts: see `_reading` and `insert`.
        self._gate = threading.Condition()
        self._reads_started = 0
        self._reads_running = 0
        self._checking = False
        self._idle: queue.SimpleQueue[Lane] = queue.SimpleQueue()  # read lanes not in use
        sessions: list[Any] = []
        try:
            # The write lane, READ_LANES read lanes, and one that looks up the running insert.
            for _ in range(READ_LANES + 2):
                sessions.append(chdb.session.Session(str(path)))
            self._write = Lane(sessions[0], session_settings)
            self._reads = [Lane(session, session_settings) for session in sessions[1:-1]]
            self._probe = sessions[-1]
            version_tz = sessions[0].query("SELECT version(), timezone()", "TabSeparated").bytes()
        except CHDB_ERRORS as exc:
            for session in reversed(sessions):
                session.close()
            raise EngineError.wrap(exc) from None
        for lane in self._reads:
            self._idle.put(lane)
        self.version, self.timezone = version_tz.decode().strip().split("\t")

    @property
    def _session(self) -> Any:
        """The write lane's chDB session (tests count the statements run on it)."""
        return self._write.session

    @_session.setter
    def _session(self, session: Any) -> None:
        self._write.session = session

    @property
    def _lock(self) -> threading.Lock:
        """Held while the write lane runs a call (tests hold it: a busy writer)."""
        return self._write.lock

    @property
    def reads_running(self) -> int:
        """Reads between their start and their end (waiting for the read lane or running)."""
        with self._gate:
            return self._reads_running

    @contextmanager
    def _reading(self) -> Iterator[Lane]:
        """A read lane, the read counted while it waits and runs; a read does not start while
        an insert checks its errors."""
        with self._gate:
            while self._checking:
                self._gate.wait()
            self._reads_started += 1
            self._reads_running += 1
        try:
            lane = self._idle.get()  # reads wait for each other, never for the write lane
            try:
                yield lane
            finally:
                self._idle.put(lane)
        finally:
            with self._gate:
                self._reads_running -= 1

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
        if _SELECT_RE.match(sql) and fmt in _STREAMED_FORMATS:
            return self._select(sql, fmt, params, database, settings, abandoned)
        if _READ_RE.match(sql):
            with self._reading() as lane, lane.scope(database, settings, abandoned):
                result, header = self._run_query(lane, sql, fmt, params)
        else:
            with self._write.scope(database, settings, abandoned):
                self._counts_after = None  # any statement may raise and count errors
                result, header = self._run_query(self._write, sql, fmt, params)
                if _USE_RE.match(sql):
                    self._write.database = None  # re-`USE` the database the next call asks for
                elif _SET_RE.match(sql):
                    self._write.reset_settings()  # over HTTP without a session, SET lasts one query
        size = result.size()
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

    def _select(
        self,
        sql: bytes,
        fmt: str,
        params: Mapping[str, str],
        database: str,
        settings: Mapping[str, str],
        abandoned: Abandoned | None,
    ) -> Outcome:
        """A SELECT on a read lane, streamed from chDB: gathered whole up to `STREAM_AFTER`,
        else the first part and the rest (the lane is held until the rest is read)."""
        start = time.perf_counter_ns()
        held = ExitStack()
        try:
            lane = held.enter_context(self._reading())
            held.enter_context(lane.scope(database, settings, abandoned))
            try:
                stream = lane.session.send_query(sql, fmt, params=dict(params))
            except CHDB_ERRORS as exc:
                raise EngineError.wrap(exc) from None
            held.callback(_cancel, stream)  # ends the query if the rest is not read
            parts: list[bytes] = []
            rows = size = 0
            while size < STREAM_AFTER and (chunk := _fetch(stream)) is not None:
                parts.append(chunk.bytes())
                rows, size = rows + chunk.rows_read(), size + len(parts[-1])
            done = size < STREAM_AFTER
            if not parts and fmt == "Native":
                # chDB writes nothing at all for an empty Native result where a server sends
                # a header block; clients then lose the column names and types.
                parts.append(self._empty_header(lane, sql, params))
        except BaseException:
            held.close()
            raise
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        summary = {
            "read_rows": str(rows),
            "read_bytes": str(size),
            "written_rows": "0",
            "written_bytes": "0",
            "result_bytes": str(len(body)),
            "elapsed_ns": str(time.perf_counter_ns() - start),
        }
        if done:
            held.close()
            return Outcome(body, summary)

        def rest() -> Iterator[bytes]:
            try:
                while (chunk := _fetch(stream)) is not None:
                    yield chunk.bytes()
            finally:
                held.close()

        return Outcome(body, summary, rest=rest(), close=held.close)

    def _run_query(
        self, lane: Lane, sql: bytes, fmt: str, params: Mapping[str, str]
    ) -> tuple[Any, bytes]:
        try:
            result = lane.session.query(sql, fmt, params=dict(params))
            # chDB writes nothing at all for an empty Native result where a server sends
            # a header block; clients then lose the column names and types.
            empty = not result.size() and fmt == "Native"
            return result, self._empty_header(lane, sql, params) if empty else b""
        except CHDB_ERRORS as exc:
            raise EngineError.wrap(exc) from None

    def _empty_header(self, lane: Lane, sql: bytes, params: Mapping[str, str]) -> bytes:
        """A zero-row Native block naming the columns a SELECT would return (DESCRIBE: no scan)."""
        if not _SELECT_RE.match(sql):
            return b""
        inner = TRAILING_FORMAT_RE.sub(b"", sql).rstrip().rstrip(b";")
        describe = b"DESCRIBE TABLE (" + inner + b"\n)"
        try:
            described = lane.session.query(describe, "TabSeparated", params=dict(params))
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
        with self._write.scope(database, settings, abandoned) as (quiet, restored):
            previous, self._counts_after = self._counts_after, None
            with self._gate:
                reads_before, read_at_start = self._reads_started, self._reads_running > 0
            # The counts after the previous call, when that was an insert that succeeded: no
            # statement ran since on either lane, so they are still the counts before this one.
            # Saves one `system.errors` query (1.5-6 ms) per insert.
            reuse = quiet and previous is not None and previous[1] == reads_before
            before = previous[0] if reuse and previous is not None else self._error_counts()
            session = self._write.session
            try:
                inserter = session.send_insert(statement, fmt)
            except CHDB_ERRORS as exc:
                raise EngineError.wrap(exc) from None
            try:
                try:
                    for chunk in chunks:
                        inserter.append(chunk)
                    check_caller(abandoned)  # the data may all have been buffered before it left
                    with self._gate:
                        self._checking = True  # no read starts until the errors are counted
                        overlapped = read_at_start or self._reads_running > 0
                        overlapped = overlapped or self._reads_started != reads_before
                    insert_id = self._insert_id() if overlapped else None
                    done = inserter.finish()
                except BaseException as exc:
                    inserter.cancel()  # idempotent; a finished inserter ignores it
                    if isinstance(exc, CHDB_ERRORS):
                        raise EngineError.wrap(exc) from None
                    raise
                after = self._raise_swallowed(before, insert_id, overlapped)
                # Reused by the next insert only if nothing else can have counted since: no
                # read ran beside this one (none runs), no setting is restored after it.
                cacheable = not overlapped and not restored
                self._counts_after = (after, reads_before) if cacheable else None
            finally:
                with self._gate:
                    self._checking = False
                    self._gate.notify_all()
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

    def _insert_id(self) -> str | None:
        """The query id of the insert running on the write lane; None if not found."""
        try:
            rows = self._probe.query(_INSERT_ID_SQL, "TabSeparated").bytes().split()
        except CHDB_ERRORS:
            return None
        return rows[0].decode() if len(rows) == 1 else None

    def _error_counts(self) -> ErrorCounts:
        """code → (times raised, name, last message, last raised by a query, its query id)."""
        try:
            result = self._write.session.query(_ERRORS_SQL, "JSONCompactEachRow")
        except CHDB_ERRORS as exc:
            raise EngineError.wrap(exc) from None
        counts: ErrorCounts = {}
        for line in result.bytes().splitlines():
            # Messages may quote the data (any bytes); ClickHouse does not re-encode them.
            code, value, name, message, in_query, query_id = json.loads(
                line.decode("utf-8", "replace")
            )
            counts[int(code)] = (int(value), name, message, bool(in_query), query_id)
        return counts

    def _raise_swallowed(
        self, before: ErrorCounts, insert_id: str | None, overlapped: bool
    ) -> ErrorCounts:
        """Raise the error an insert hit after chDB's `finish()` reported success; else
        return the counts now.

        chDB 4.4's streaming insert drops exceptions thrown while the parsed blocks are
        written (a materialized view that throws, a CHECK constraint, error 252 "too many
        partitions"): nothing is stored, yet it returns rows_written. Every DB::Exception
        counts itself in `system.errors`, and the write lane runs one call at a time, so a
        count that grew during the insert, last raised by a query (not by a background merge
        or mutation), is the insert's own failure, unless a read ran meanwhile
        (`overlapped`): then a code counted once more, last raised by another query than the
        insert (`insert_id`), is that read's error. A code counted more than once with a read
        running, or with the insert's id unknown, is still blamed on the insert: a spurious
        failure (the sink stops and reads the batch again) rather than a silent loss.
        """
        now = self._error_counts()
        grown = insert_errors(before, now, insert_id, overlapped)
        if not grown:
            return now
        code, name, message = grown[0]
        others = f" (and {len(grown) - 1} more error(s))" if len(grown) > 1 else ""
        raise EngineError(
            code,
            f"Code: {code}. DB::Exception: {message.rstrip('. ')} (the insert failed although "
            f"chDB reported it done){others}. ({name})",
        )

    def close(self) -> None:
        """Close the sessions once no call runs; chDB releases the directory lock."""
        self._write.close()
        for lane in self._reads:
            lane.close()
        with self._write.lock:
            self._probe.close()


READ_SIDE_CODES = frozenset({696})
"""Codes only a read raises: ASYNC_LOAD_CANCELED ("Background task for loading marks was
canceled"), a read cut while it loaded the marks of existing parts, once per part (an insert
writes new parts; its views read the inserted block only). Seen in CI under load: a reader cut
beside an insert counted it several times, and the insert was blamed: the demo's record sink
stopped on a failure that was not its own."""


def insert_errors(
    before: ErrorCounts, now: ErrorCounts, insert_id: str | None, overlapped: bool
) -> list[tuple[int, str, str]]:
    """(code, name, message) of the errors `system.errors` counted during an insert that are
    the insert's (see `ChdbEngine._raise_swallowed`): a code raised by queries, grown since
    `before`, unless a read ran beside the insert (`overlapped`) and the code was last raised
    by that other query, and either grew by one or is a read-side code (`READ_SIDE_CODES`)."""
    grown = []
    for code, (value, name, message, in_query, query_id) in sorted(now.items()):
        more = value - before.get(code, (0, "", "", False, ""))[0]
        if not in_query or more <= 0:
            continue
        if overlapped and insert_id and query_id != insert_id:
            if more == 1 or code in READ_SIDE_CODES:
                continue  # raised by a read running beside the insert
        grown.append((code, name, message))
    return grown


def _fetch(stream: Any) -> Any:
    """The next block of a streamed result (a chDB result), None at its end."""
    try:
        return stream.fetch()
    except CHDB_ERRORS as exc:
        raise EngineError.wrap(exc) from None


def _cancel(stream: Any) -> None:
    """End a streamed query (idempotent); a failure to cancel leaves nothing to report."""
    with suppress(*CHDB_ERRORS):
        stream.cancel()


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
