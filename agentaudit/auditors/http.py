"""The auditor route of the embedded store's HTTP endpoint.

An auditor points any ClickHouse HTTP client at the endpoint with user = auditor name and
password = token. `chdb_http` hands such requests here (never to the raw engine): the
statement goes through `AuditorGate` (channel `http`), which checks, scopes and records it
through an operator connection to the same endpoint, and the allowed, fenced statement runs on
the engine in the format the client asked for. clickhouse-connect's connection handshake
(server version and time zone, the settings list, the protocol probe) is answered, once the
auditor is authenticated, without touching the trail and is not recorded; it reports every
setting read-only, so the client sends none. A failed authentication is logged (WARNING).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from agentaudit.auditors.gate import AuditorGate, Counts, Fenced
from agentaudit.auditors.registry import AuthenticationFailed, authenticate
from agentaudit.settings import Settings
from agentaudit.sqlguard import Limits
from agentaudit.store.chdb_engine import ChdbEngine, EngineError, Outcome
from agentaudit.store.client import ClickHouseStore
from agentaudit.store.protocol import Store

log = logging.getLogger(__name__)

# Each auditor statement holds one of the engine's few read lanes for up to twice the time
# limit (its run, then its count): N auditor requests at once took every read lane (on the one
# session the engine had before, they queued up to N x 60 s ahead of the sink's inserts). One
# auditor statement runs at a time; the others wait here, off the engine, at most RUN_WAIT_S,
# then get Code 202 (recorded).
RUNNING = threading.BoundedSemaphore(1)
RUN_WAIT_S = 2 * Limits().max_seconds + 10
TOO_MANY_SIMULTANEOUS_QUERIES = 202

RESULT_BYTES = Limits().max_result_bytes
"""The gate's result limit, counted on the bytes the endpoint sends: ClickHouse's own (in the
fence's SETTINGS) is blind to constant columns (800 MB of `repeat('x', 1000000)` passed it)."""

DATABASE = "default"  # auditors' statements run here whatever the client asks (explained once)
HANDSHAKE = {
    "SELECT version(), timezone()": "SELECT version(), timezone()",
    "SELECT name, value, readonly FROM system.settings LIMIT 10000": (
        "SELECT name, value, 1 AS readonly FROM system.settings LIMIT 10000"
    ),
    "SELECT 1 AS check": "SELECT 1 AS check",
}


class AuditorRoute:
    """Answers auditor requests for the server whose operator endpoint is `endpoint`."""

    def __init__(self, settings: Settings, engine: ChdbEngine, store: Store) -> None:
        self.settings = settings
        self.engine = engine
        self.store = store  # an operator connection to this same endpoint (loopback)

    @classmethod
    def for_endpoint(
        cls, settings: Settings, engine: ChdbEngine, url: str, token: str
    ) -> AuditorRoute:
        """The route of the server at `url` (the store connection opens on first use)."""
        from agentaudit.store.embedded import Published

        host_port = url.removeprefix("http://")
        published = Published(f"http://{host_port}", token, 0)
        return cls(settings, engine, _LazyStore(published))

    def __call__(self, user: str, password: str, sql: bytes, fmt: str) -> Outcome:
        """The auditor's answer: AuthenticationFailed, BadQuery, AccessLogUnavailable or the
        run's error propagate (the server turns them into ClickHouse-style errors)."""
        text = sql.decode("utf-8", "replace").strip().rstrip(";").strip()
        try:
            # First, the handshake too: it reads the engine (system.settings), and anyone who
            # names a user other than `default` reaches this route.
            auditor = authenticate(self.store, user, password)
        except AuthenticationFailed:
            # Not in any tenant's trail (no auditor, no tenant), but not unseen: the claimed
            # name as a repr, so a newline or an escape in it cannot forge or hide a log line.
            log.warning("auditor authentication failed on the store endpoint for %r", user)
            raise
        for asked, answered in HANDSHAKE.items():
            if (
                text == asked
                or text == f"{asked}\n FORMAT {fmt}"
                or text == f"{asked} FORMAT {fmt}"
            ):
                return self.engine.query(answered.encode(), fmt, {}, DATABASE, {})

        started: list[Outcome] = []

        def execute(fenced: Fenced) -> tuple[Outcome, Counts]:
            if not RUNNING.acquire(timeout=RUN_WAIT_S):
                raise EngineError(
                    TOO_MANY_SIMULTANEOUS_QUERIES,
                    f"Code: 202. DB::Exception: other auditors' statements kept the store busy "
                    f"for {RUN_WAIT_S:g} s; retry. (TOO_MANY_SIMULTANEOUS_QUERIES)",
                )
            streamed = False
            try:
                outcome = self.engine.query(fenced.text.encode(), fmt, {}, DATABASE, {})
                started.append(outcome)
                outcome.limit = RESULT_BYTES
                # chDB reports no result row count, and the client's format (Native) is not
                # parsed here: a second run, equally scoped and fenced, counts the rows.
                rows = int(self.store.query(fenced.count_text).result_rows[0][0])
                if outcome.rest is not None:
                    # A streamed result holds a read lane until its client has read it: the
                    # statement still runs, for RUNNING, so that auditors reading slowly hold
                    # one lane, not every one (every read of the store waited then).
                    outcome.close = _then_release(outcome.close)
                    streamed = True
            finally:
                if not streamed:
                    RUNNING.release()
            summary = outcome.summary
            return outcome, Counts(
                rows, int(summary.get("read_rows", 0)), int(summary.get("read_bytes", 0))
            )

        gate: AuditorGate[Outcome] = AuditorGate(self.settings, self.store)
        try:
            return gate.run(auditor, text, "http", execute)
        except BaseException:
            for outcome in started:  # not answered: a streamed result frees its read lane
                outcome.close()
            raise


def _then_release(close: Callable[[], None]) -> Callable[[], None]:
    """`close`, then RUNNING released, once however often it is called."""
    done = threading.Lock()

    def close_once() -> None:
        if done.acquire(blocking=False):
            try:
                close()
            finally:
                RUNNING.release()

    return close_once


class _LazyStore:
    """A ClickHouseStore to the endpoint, connected on first use (the server must be serving)."""

    def __init__(self, published: Any) -> None:
        self._published = published
        self._store: ClickHouseStore | None = None

    def _get(self) -> ClickHouseStore:
        if self._store is None:
            self._store = ClickHouseStore(self._published.endpoint(), connect_timeout=3)
        return self._store

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        return self._get().query(sql, parameters)

    def command(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        return self._get().command(sql, parameters)

    def insert(self, *args: Any, **kwargs: Any) -> None:
        self._get().insert(*args, **kwargs)

    def ping(self) -> bool:
        return self._get().ping()

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
