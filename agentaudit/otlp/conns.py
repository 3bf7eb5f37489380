"""The receiver's listening socket, with a bound on the connections it holds.

aiohttp accepts every connection and, served by an `AppRunner`, keeps one that sends nothing,
or only part of its request line and headers, for its default keep-alive time of 3,630 s: the
request handler (and its read deadline) only starts once the headers are complete. The
receiver shares its process with the worker's sink, so a client that opened connections
without finishing a request took every file descriptor of the process (measured: 1,100
half-sent requests under the common 1,024 limit; the sink's store and Kafka clients could no
longer open a file or socket, the accept loop logged EMFILE tracebacks without end), and did so
without an API key, which is read from the headers.

`CappedSite` holds at most `limit` connections. Past it, the oldest connection that is not in
a request (idle between requests, or still sending its headers) is closed to make room: a
flood of idle connections cannot lock exporters out, and an exporter whose idle keep-alive
connection was closed opens another. When every connection is in a request (each bounded by
the receiver's read deadline and slots), the new one is answered 503 with `Retry-After` and
closed. The runner's `keepalive_timeout` (`otlp_idle_timeout_s`) closes idle connections and
ones that do not complete their headers in time.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger("agentaudit.otlp")

FDS_PER_CONNECTION = 2
"""At most this share (1/n) of the process's open-file limit goes to client connections: the
rest is the worker's (store files, Kafka sockets, the decode threads' needs)."""


def connection_limit(configured: int) -> int:
    """`configured`, lowered to half the process's open-file limit (RLIMIT_NOFILE soft)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return configured
    cap = max(1, soft // FDS_PER_CONNECTION)
    if configured > cap:
        log.warning(
            "OTLP receiver: %d connections allowed, not %d: the open-file limit is %d",
            cap,
            configured,
            soft,
        )
    return min(configured, cap)


def _busy_response(retry_after: int) -> bytes:
    body = b"receiver at its connection limit, retry later\n"
    return (
        b"HTTP/1.1 503 Service Unavailable\r\n"
        + f"Retry-After: {retry_after}\r\n".encode()
        + b"Content-Type: text/plain\r\nConnection: close\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )


class _Refuse(asyncio.Protocol):
    """A connection over the limit: 503 and closed, before anything is read."""

    def __init__(self, response: bytes) -> None:
        self.response = response

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(self.response)
        transport.close()


class CappedSite(web.BaseSite):
    """A TCP site holding at most `limit` connections (see the module docstring); `busy(h)`
    tells whether connection `h` is in a request. `counters` gets `connections_closed_idle`
    and `connections_refused` incremented."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        limit: int,
        busy: Callable[[RequestHandler], bool],
        counters: dict[str, int],
        retry_after: int,
    ) -> None:
        super().__init__(runner)
        self._host, self._port = host, port
        self.limit = limit
        self._busy = busy
        self._counters = counters
        self._refusal = _busy_response(retry_after)
        counters.setdefault("connections_closed_idle", 0)
        counters.setdefault("connections_refused", 0)

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        self._server = await asyncio.get_running_loop().create_server(
            self._protocol, self._host, self._port, reuse_address=True
        )

    def _protocol(self) -> Any:
        server = self._runner.server
        assert server is not None
        # A connection closed here stays listed until its handler task ends: not counted.
        live = [h for h in server.connections if h.transport is not None]
        if len(live) >= self.limit:
            idle = next((h for h in live if not self._busy(h)), None)
            if idle is None:
                self._counters["connections_refused"] += 1
                return _Refuse(self._refusal)
            idle.force_close()
            self._counters["connections_closed_idle"] += 1
        return server()
