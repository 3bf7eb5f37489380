"""One chDB session of the embedded store, used by one call at a time: a lane.

The owner keeps two lanes on its data directory (`ChdbEngine`): one for reads, one for
everything else, so that a long read never queues the sink's inserts. A session carries state
(current database, settings) that ClickHouse's HTTP interface scopes to a single query; the
lane gives each call the database and settings it asked for and restores the session after.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
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


def check_caller(abandoned: Abandoned | None) -> None:
    """Raise `CallerGone` if the caller has gone."""
    if abandoned is not None and abandoned():
        raise CallerGone()


def closed_error() -> EngineError:
    return EngineError(
        NETWORK_ERROR,
        f"Code: {NETWORK_ERROR}. DB::Exception: The embedded store is shutting down; "
        "reconnect to its next owner. (NETWORK_ERROR)",
    )


class Lane:
    """`session` (a chDB session) with a lock and the per-call database and settings scope."""

    def __init__(self, session: Any, session_settings: Mapping[str, str] | None = None) -> None:
        self.session = session
        self.lock = threading.Lock()
        self.database: str | None = None  # None: unknown, `USE` before the next call
        self.closed = False
        self._restore: dict[str, str] = {}
        for name, value in (session_settings or {}).items():
            self.session.query(f"SET {ident(name)} = {literal(value)}", "TabSeparated")
        self.values = self._current_settings()

    def _current_settings(self) -> dict[str, str]:
        """Each setting's value and how to put it back: `DEFAULT` unless the session changed it."""
        rows = self.session.query(
            "SELECT name, value, changed FROM system.settings", "TabSeparated"
        )
        values: dict[str, str] = {}
        for line in rows.bytes().decode().splitlines():
            name, value, changed = line.split("\t")
            values[name] = value
            self._restore[name] = literal(value) if changed == "1" else "DEFAULT"
        return values

    @contextmanager
    def scope(
        self, database: str, settings: Mapping[str, str], abandoned: Abandoned | None = None
    ) -> Iterator[tuple[bool, bool]]:
        """Hold the session with `database` current and `settings` applied, then restore them.
        `CallerGone` if `abandoned()` once the session is held (a call may wait long for it).

        Yields (no statement of the lane's own ran before the call, settings will be restored
        after it): statements that count in `system.errors` beside the call's own.
        """
        with self.lock:
            if self.closed:
                raise closed_error()
            check_caller(abandoned)
            quiet = True
            if database != self.database:
                quiet = False
                self.run(f"USE `{database.replace('`', '``')}`")
                self.database = database
            changed = {k: v for k, v in settings.items() if self.values.get(k) != v}
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
                    self.run(f"SET {ident(name)} = {literal(value)}")
                    applied.append(name)
                yield quiet and not applied, bool(applied)
            finally:
                for name in applied:
                    self.run(f"SET {name} = {self._restore.get(name, 'DEFAULT')}")

    def reset_settings(self) -> None:
        """Put back every setting a client's `SET` statement changed on the session."""
        changed = self.session.query(
            "SELECT name, value FROM system.settings WHERE changed", "TabSeparated"
        )
        for line in changed.bytes().decode().splitlines():
            name, value = line.split("\t")
            if self.values.get(name) != value:
                self.run(f"SET {name} = {self._restore.get(name, 'DEFAULT')}")

    def run(self, sql: str) -> None:
        try:
            self.session.query(sql, "TabSeparated")
        except CHDB_ERRORS as exc:
            raise EngineError.wrap(exc) from None

    def close(self) -> None:
        """Close the session once no call is running on it. Idempotent."""
        with self.lock:
            if not self.closed:
                self.closed = True
                self.session.close()


def ident(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise EngineError(
            115, f"Code: 115. DB::Exception: Unknown setting '{name}'. (UNKNOWN_SETTING)"
        )
    return name


def literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
