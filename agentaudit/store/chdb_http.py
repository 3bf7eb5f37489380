"""The subset of ClickHouse's HTTP interface that clickhouse-connect uses, served from chDB.

The process that owns the embedded store runs this on 127.0.0.1 so every other reader goes
through the one client path used against a real server. Requests are answered the way a
server answers them: `Ok.` on `/ping`, results in the requested format with the
`X-ClickHouse-*` headers the client reads, and errors as `Code: N. DB::Exception: ...` with
`X-ClickHouse-Exception-Code`, so clickhouse-connect raises `DatabaseError` with the code.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import json
import logging
import os
import re
import secrets
import select
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from agentaudit.errors import UserError
from agentaudit.store.chdb_engine import (
    TRAILING_FORMAT_RE,
    CallerGone,
    ChdbEngine,
    EngineError,
    Outcome,
)
from agentaudit.store.client import USER_ERROR_CODES
from agentaudit.store.http_body import (
    TRANSPORT,
    Body,
    param_text,
    parse_form,
    parse_query_string,
)
from agentaudit.store.http_result import (
    RESULT_BYTES_LIMIT,
    asked_limit,
    result_too_large,
    write_chunked,
)
from agentaudit.store.http_statement import (
    INSERT_RE,
    refuse_several,
    split_insert,
)

log = logging.getLogger(__name__)

DISPLAY_NAME = "agentaudit-embedded"
OWNER_PID_HEADER = "X-AgentAudit-Owner-Pid"
AUTHENTICATION_FAILED = 516

_USER_ERROR = 497  # ACCESS_DENIED: a refused auditor statement, an unrecorded one
_NAMES = {AUTHENTICATION_FAILED: "AUTHENTICATION_FAILED", _USER_ERROR: "ACCESS_DENIED"}
# (user, password, statement without FORMAT, format) -> the answer; raises UserError to refuse.
AuditorRoute = Callable[[str, str, bytes, str], Outcome]
_QUERY_STRING_RE = re.compile(r"\?[^\s'\"]*")
# The peer's FIN shows as POLLRDHUP (Linux) even while its request data is still unread.
_HANG_UP = getattr(select, "POLLRDHUP", 0) | select.POLLHUP | select.POLLERR
_HEAD_LIMIT = 1 << 18  # an INSERT statement longer than this is not a data insert
# Insert data read before the session is held (see `_execute`): a sink batch is at most
# sink_batch_bytes (64 MiB) and one fetch; larger inserts stream the rest under the session.
_PREREAD = 128 << 20
LANE_READ_TIMEOUT_S = 10.0
"""How long the rest of an insert past `_PREREAD`, read holding the write lane, may wait for the
client's next bytes (a larger insert from a healthy client on loopback never pauses that long)."""
# An auditor's request is one statement, read whole before anyone is authenticated: bounded,
# far above what ClickHouse parses (max_query_size, 256 KiB), so a small compressed body cannot
# make the store owner (and its sink) hold gigabytes.
AUDITOR_BODY_LIMIT = 1 << 20

_CONTENT_TYPES = {
    "Native": "application/octet-stream",
    "RowBinary": "application/octet-stream",
    "JSON": "application/json; charset=UTF-8",
    "JSONEachRow": "application/x-ndjson; charset=UTF-8",
}
# HTTP status per ClickHouse error code, as the server's exceptionCodeToHTTPStatus does.
_STATUS = {516: 401, 194: 401, 497: 403, 164: 403, 60: 404, 81: 404, 46: 404, 48: 501}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clickhouse-connect pools connections
    disable_nagle_algorithm = True  # headers and body go out as separate writes
    # Bounds how long a stalled client can hold the session (an insert reads its body under
    # the lock) and closes idle keep-alive connections; clients reconnect transparently.
    timeout = 120
    server: ChdbHttpServer

    def log_message(self, format: str, *args: object) -> None:
        # The request line's query string may carry `password=` (the store's or an auditor's
        # token, also percent-encoded) and the statement: it never reaches the log.
        text = _QUERY_STRING_RE.sub("?...", format % args)
        log.debug("%s %s", self.address_string(), text)

    def handle_one_request(self) -> None:
        # Until it is authenticated, a request's connection may be closed for a new one when
        # every slot is taken (`ChdbHttpServer.verify_request`): idle ones included.
        self.server.evictable(self.connection)
        super().handle_one_request()

    def _hold_slot(self) -> None:
        """The request is authenticated: its connection is no longer closed for a new one.
        OSError if it was, a moment ago (the request is then not run)."""
        if not self.server.hold(self.connection):
            raise OSError("connection closed for a new one")

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self, head: bool = False) -> None:
        url = urlsplit(self.path)
        try:
            body = Body(self.rfile, self.headers)
        except ValueError as exc:  # e.g. Content-Length 'abc' or '-5': the request is unreadable
            self.send_error(400, str(exc))
            return
        params = parse_query_string(url.query)
        if url.path == "/ping" or (url.path == "/" and "query" not in params and body.done):
            # The pid lets a reader tell this owner from whatever serves the port an owner
            # that died had published (`embedded.read_live_endpoint`).
            ok = {"Content-Type": "text/plain; charset=UTF-8", OWNER_PID_HEADER: str(os.getpid())}
            self._reply(200, b"Ok.\n", ok, head=head)
            return
        if url.path != "/":
            body.drain()
            self._reply(
                404, f"There is no handle {url.path}\n".encode(), {"Content-Type": "text/plain"}
            )
            return
        query_id = params.get("query_id", b"").decode(errors="replace") or str(uuid.uuid4())
        try:
            user, password = self._credentials(params)
            if self.server.auditors is not None and user and not self._authorized(params):
                # Auditor credentials: the auditor path, never the raw engine.
                fmt, outcome = self._audited(user, password, body, params)
            elif not self._authorized(params):
                raise EngineError(
                    AUTHENTICATION_FAILED,
                    "Code: 516. DB::Exception: Authentication failed: the embedded store wants the "
                    "token from store.endpoint.json as the password. (AUTHENTICATION_FAILED)",
                )
            else:
                self._hold_slot()
                fmt, outcome = self._execute(body, params)
        except OSError:  # the client went away mid-request: nobody to answer
            self.close_connection = True
            return
        except CallerGone:
            log.info("query %r not run: its client closed the connection while it waited", query_id)
            self.close_connection = True
            return
        except Exception as exc:  # answered like a server would, never a dropped connection
            error = exc if isinstance(exc, EngineError) else EngineError.wrap(exc)
            if not isinstance(exc, EngineError):
                log.exception("embedded store request failed")
            self._fail(body, error, query_id)
            return
        headers = {
            "Content-Type": _CONTENT_TYPES.get(fmt, "text/plain; charset=UTF-8"),
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Summary": json.dumps(outcome.summary),
        }
        if outcome.body:  # a statement with a result set
            headers["X-ClickHouse-Format"] = fmt
        limit = outcome.limit or RESULT_BYTES_LIMIT
        try:
            if outcome.rest is not None:
                self._stream(outcome, headers, limit)
            elif memoryview(outcome.body).nbytes > limit:
                self._fail(body, result_too_large(limit), query_id)
            else:
                self._reply(200, outcome.body, headers)
        except OSError:  # the client went away mid-answer
            self.close_connection = True
        finally:
            outcome.close()  # a streamed result's query ends, its read lane is free again

    def _stream(self, outcome: Outcome, headers: dict[str, str], limit: int) -> None:
        """Send a result block by block (chunked), never more than `limit` bytes of it.

        An error after the head is sent (the limit, or one the query ran into) is written the
        way a ClickHouse server writes it, between `__exception__` markers with the tag of
        `X-ClickHouse-Exception-Tag`, and the connection is closed: clients raise it with its
        code instead of taking the rows sent so far for the whole result."""
        tag = secrets.token_hex(8)
        self.send_response(200)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("X-ClickHouse-Server-Display-Name", DISPLAY_NAME)
        self.send_header("X-ClickHouse-Timezone", self.server.engine.timezone)
        self.send_header("X-ClickHouse-Exception-Tag", tag)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if not write_chunked(self.wfile, outcome, limit, tag):
            self.close_connection = True

    def _fail(self, body: Body, error: EngineError, query_id: str) -> None:
        try:
            body.drain()  # the client may still be sending; it must read our answer first
        except (OSError, ValueError):
            self.close_connection = True  # an unreadable body: the connection cannot be reused
        status = _STATUS.get(error.code, 400 if error.code in USER_ERROR_CODES else 500)
        headers = {
            "Content-Type": "text/plain; charset=UTF-8",
            "X-ClickHouse-Exception-Code": str(error.code),
            "X-ClickHouse-Query-Id": query_id,
        }
        self._reply(status, f"{error.message}\n".encode(), headers)

    def _credentials(self, params: dict[str, bytes]) -> tuple[str, str]:
        """(user, password) from basic auth, X-ClickHouse-User/Key or `user=`/`password=`."""
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            try:
                text = base64.b64decode(auth[6:]).decode(errors="replace")
            except ValueError:
                return "", ""
            user, _, password = text.partition(":")
        else:
            user = self.headers.get("X-ClickHouse-User") or params.get("user", b"").decode(
                errors="replace"
            )
            password = self.headers.get("X-ClickHouse-Key") or params.get("password", b"").decode(
                errors="replace"
            )
        # `default` (or no user) is the operator, who authenticates with the endpoint's token.
        return ("", "") if user == "default" else (user, password)

    def _audited(
        self, user: str, password: str, body: Body, params: dict[str, bytes]
    ) -> tuple[str, Outcome]:
        """An auditor's request: the whole body is one statement, judged by the route."""
        assert self.server.auditors is not None
        try:
            if body.content_type.startswith("multipart/form-data"):
                form = body.read_all(AUDITOR_BODY_LIMIT)
                params = {**params, **parse_form(body.content_type, form)}
            # Several statements are refused by the route's parser check, and recorded.
            sql = (params["query"] + b"\n" if "query" in params else b"") + body.read_all(
                AUDITOR_BODY_LIMIT
            )
        except EngineError:
            # Refused before anyone is authenticated, so in no tenant's trail: logged instead.
            log.warning("oversized request body refused for auditor user %r", user)
            raise
        trailing = TRAILING_FORMAT_RE.search(sql)
        fmt = params.get("default_format", b"").decode() or "TabSeparated"
        if trailing:
            fmt, sql = trailing.group(1).decode(), sql[: trailing.start()]
        self._hold_slot()  # the route authenticates before anything else
        try:
            return fmt, self.server.auditors(user, password, sql, fmt)
        except EngineError:
            raise
        except UserError as exc:  # refused, unauthenticated, unrecorded: the auditor's answer
            code = getattr(exc, "clickhouse_code", _USER_ERROR)
            name = _NAMES.get(code, "ACCESS_DENIED")
            raise EngineError(code, f"Code: {code}. DB::Exception: {exc}. ({name})") from None

    def _authorized(self, params: dict[str, bytes]) -> bool:
        """The token as password: basic auth, X-ClickHouse-Key, `password=`, or a bearer token."""
        supplied = self.headers.get("X-ClickHouse-Key") or params.get("password", b"").decode(
            errors="replace"
        )
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            try:
                supplied = base64.b64decode(auth[6:]).decode(errors="replace").partition(":")[2]
            except ValueError:
                return False
        elif auth.startswith("Bearer "):
            supplied = auth[7:]
        return hmac.compare_digest(supplied.encode(), self.server.token.encode())

    def _execute(self, body: Body, params: dict[str, bytes]) -> tuple[str, Outcome]:
        engine = self.server.engine
        database = params.get("database", b"").decode() or "default"
        default_fmt = params.get("default_format", b"").decode() or "TabSeparated"
        settings = {
            k: v.decode()
            for k, v in params.items()
            if k not in TRANSPORT and not k.startswith("param_")
        }
        chunks = body.chunks()
        if body.content_type.startswith("multipart/form-data"):
            params = {**params, **parse_form(body.content_type, body.read_all())}
            chunks = iter(())
        prefix = params["query"] + b"\n" if "query" in params else b""
        head = prefix
        for chunk in chunks:  # gather enough of the body to see where the statement ends
            head = head + chunk if head else chunk
            if len(head) >= _HEAD_LIMIT or INSERT_RE.match(head):
                break
        insert = split_insert(head)
        if insert is not None:
            statement, fmt, offset = insert
            refuse_several(statement.encode())

            # The body is read before the session is held, up to _PREREAD bytes: read under
            # it, a client that stopped sending mid-body (a sink process frozen mid-insert)
            # held every other caller, the sink's inserts included, for the socket timeout.
            early = [head[offset:]] if offset < len(head) else []
            size = len(early[0]) if early else 0
            # Stopping leaves the rest of the body to `data()`.
            while size < _PREREAD and (more := next(chunks, None)) is not None:
                early.append(more)
                size += len(more)

            def data() -> Iterator[bytes]:
                yield from early
                # The rest is read holding the write lane: a client frozen there (a sink
                # process stopped mid-send) held every writer for the 120 s idle timeout.
                self.connection.settimeout(LANE_READ_TIMEOUT_S)
                try:
                    yield from chunks
                finally:
                    self.connection.settimeout(self.timeout)

            return fmt, engine.insert(statement, fmt, data(), database, settings, self._gone)
        sql = head + b"".join(chunks)
        refuse_several(sql)
        trailing = TRAILING_FORMAT_RE.search(sql)
        fmt = trailing.group(1).decode() if trailing else default_fmt
        query_params = {k[6:]: param_text(v) for k, v in params.items() if k.startswith("param_")}
        outcome = engine.query(sql, fmt, query_params, database, settings, self._gone)
        outcome.limit = asked_limit(settings, sql)  # counted on the bytes sent, constants too
        return fmt, outcome

    def _gone(self) -> bool:
        """Whether the client closed its end: it gave up waiting (a read timeout) and may retry
        elsewhere, so a statement still waiting for the session must not run for nobody."""
        poller = select.poll()
        poller.register(self.connection, _HANG_UP)
        return bool(poller.poll(0))

    def _reply(
        self, status: int, body: bytes | memoryview, headers: dict[str, str], head: bool = False
    ) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("X-ClickHouse-Server-Display-Name", DISPLAY_NAME)
        self.send_header("X-ClickHouse-Timezone", self.server.engine.timezone)
        self.send_header("Content-Length", str(memoryview(body).nbytes))
        self.end_headers()
        if not head and body:
            self.wfile.write(body)


MAX_CONNECTIONS = 256
"""Connections served at once. Any local process may connect (the token is asked per request),
and each connection holds a thread and a file descriptor for up to `_Handler.timeout` idle:
unbounded, ~1,000 idle connections took every descriptor of an owner under the usual limit of
1,024 (ulimit -n), and chDB then failed the sink's insert (Code 1001 'Too many open files',
which stops the worker). At the bound, a new connection takes the slot of the one that has
waited longest without an authenticated request (idle, or sending a head or an auditor's body),
which is closed: 256 idle connections (no token needed) refused every new client, the sink's
next connection included, for as long as they were kept open. The pipeline's own clients hold a
few each (one per concurrent call) and reconnect when one is closed."""
EVICT_WAIT_S = 2.0
"""How long a new connection waits for the slot of the connection closed for it."""


SHUTDOWN_POLL_S = 0.05
"""How often the serving loop looks for `close()`. socketserver's default, 0.5 s, was waited out
by every owner's close: ~0.3 s of each CLI command that owns the store (no worker running)."""


class ChdbHttpServer(ThreadingHTTPServer):
    """Serves `engine` on 127.0.0.1:`port` (0 = any free port) to callers presenting `token`,
    on at most `max_connections` connections at once."""

    daemon_threads = True
    request_queue_size = 64

    def __init__(
        self, engine: ChdbEngine, token: str, port: int = 0, max_connections: int = MAX_CONNECTIONS
    ) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.engine = engine
        self.token = token
        self._slots = threading.BoundedSemaphore(max_connections)
        # Connections waiting for a request or serving one not yet authenticated, and since when.
        self._evictable: dict[socket.socket, float] = {}
        self._evictable_lock = threading.Lock()
        self._max_connections = max_connections
        self._refusing = False  # a warning per episode of refusals, not per connection
        self._evicting = False  # the same for connections closed for new ones
        # Requests with other credentials go here (agentaudit/auditors/http.py); None: refused.
        self.auditors: AuditorRoute | None = None
        self._thread: threading.Thread | None = None

    def evictable(self, connection: socket.socket) -> None:
        """`connection` waits for a request, or serves one not yet authenticated."""
        with self._evictable_lock:
            self._evictable[connection] = time.monotonic()

    def hold(self, connection: socket.socket) -> bool:
        """`connection` serves an authenticated request; False if it was closed for a new one."""
        with self._evictable_lock:
            return self._evictable.pop(connection, None) is not None

    def _evict(self) -> bool:
        """Close the connection that has waited longest without an authenticated request."""
        with self._evictable_lock:
            if not self._evictable:
                return False
            oldest = min(self._evictable, key=self._evictable.__getitem__)
            del self._evictable[oldest]
        if not self._evicting:  # a warning per episode, not per connection
            self._evicting = True
            log.warning(
                "embedded store endpoint: %d connections open, closing the ones that waited "
                "longest without an authenticated request for new ones",
                self._max_connections,
            )
        with contextlib.suppress(OSError):
            oldest.shutdown(socket.SHUT_RDWR)  # its handler reads EOF, ends, frees its slot
        return True

    def verify_request(self, request: object, client_address: object) -> bool:
        """Take a connection slot; with none free, close the connection that has waited longest
        without an authenticated request for it, or refuse (socketserver closes this one)."""
        if self._slots.acquire(blocking=False):
            self._refusing = self._evicting = False
            return True
        if self._evict() and self._slots.acquire(timeout=EVICT_WAIT_S):
            return True
        if not self._refusing:
            self._refusing = True
            log.warning(
                "embedded store endpoint: %d connections serve authenticated requests, refusing "
                "new ones until one closes",
                self._max_connections,
            )
        return False

    def close_request(self, request: Any) -> None:
        with self._evictable_lock:
            self._evictable.pop(request, None)
        super().close_request(request)

    def process_request(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread started (none left?): the slot is free again
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> ChdbHttpServer:
        """Serve from a daemon thread; returns self."""
        self._thread = threading.Thread(
            target=self.serve_forever,
            kwargs={"poll_interval": SHUTDOWN_POLL_S},
            name="chdb-http",
            daemon=True,
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop accepting requests and wait for the serving loop to end (the engine stays open)."""
        if self._thread is not None:
            self.shutdown()
            self._thread.join()
            self._thread = None
        self.server_close()
