"""Kafka transport on aiokafka; aiokafka is imported on first `start()`, never at import time.

Defaults suit an audit stream: `acks="all"`, compression, a short producer linger (the
client already batches). Compression `"auto"` (the default) is lz4 when cramjam is installed
(the SDK's `lz4`, `zstd` or `snappy` extra; the server has it) and gzip (standard library)
otherwise; a codec named explicitly whose package is missing is `CodecUnavailable` at once.
Idempotence is off by default because the local Tansu broker rejects InitProducerId;
production clusters may turn it on. Any failure maps to
`TransportUnavailable`: the client spools the batch and, on its next reconnect, `start()`
builds a fresh producer.

Ordering under failures, without idempotence: per partition aiokafka has one request in
flight and retries a failed batch before the next one, so what reaches the broker is always
a prefix of what we sent — unless a batch *expires* (its TTL is `request_timeout_ms`) while
a later one still gets through, which would leave a gap. Hence `send_timeout_s` must be
shorter than that TTL, and a producer that failed is aborted (its sender task cancelled)
before the batch is spooled: nothing it held can land after the replayed copies. Records
of the failed batch that did land are sent again on replay; the sink drops them by event_id.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from agentaudit_sdk.kafka_config import (
    KafkaConnection,
    KafkaSetupError,
    as_connection,
    cancelled_ourselves,
    start,
)
from agentaudit_sdk.kafka_config import producer as new_producer
from agentaudit_sdk.transport import RecordsRefused, TransportUnavailable

logger = logging.getLogger("agentaudit.producers")

CRAMJAM_CODECS = ("lz4", "zstd", "snappy")
"""aiokafka 0.14 compresses these through cramjam: the SDK's extra of the same name has it."""


class CodecUnavailable(ImportError):
    """A compression codec was configured whose package is not installed."""

    def __init__(self, codec: str) -> None:
        super().__init__(
            f"Kafka compression {codec!r} needs the cramjam package, which is not installed: "
            f"pip install 'agentaudit-sdk[{codec}]' (or use compression='gzip' or 'auto')",
            name="cramjam",
        )


def resolve_compression(compression: str | None) -> str | None:
    """The codec to produce with: `"auto"` → lz4 with cramjam, else gzip; a cramjam codec
    without cramjam → `CodecUnavailable` (never a silent fallback to uncompressed)."""
    if compression not in (None, "auto", "gzip", *CRAMJAM_CODECS):
        raise ValueError(f"unsupported compression {compression!r}")
    # find_spec locates the package without importing it (the SDK's import stays cheap).
    has_cramjam = compression in ("auto", *CRAMJAM_CODECS) and bool(
        importlib.util.find_spec("cramjam")
    )
    if compression == "auto":
        return "lz4" if has_cramjam else "gzip"
    if compression in CRAMJAM_CODECS and not has_cramjam:
        raise CodecUnavailable(compression)
    return compression


class KafkaTransport:
    """Produces each (key, value) record to `topic`; key = tenant_id keeps a tenant's events
    in one partition, in order. `bootstrap`: a `KafkaConnection` (TLS, SASL; e.g.
    `KafkaConnection.from_env()`) or a bootstrap string (plaintext)."""

    def __init__(
        self,
        bootstrap: str | KafkaConnection,
        topic: str,
        *,
        acks: str | int = "all",
        compression: str | None = "auto",
        enable_idempotence: bool = False,
        linger_ms: int = 5,
        request_timeout_ms: int = 30_000,
        retry_backoff_ms: int = 200,
        connect_timeout_s: float = 10.0,
        send_timeout_s: float = 20.0,
        close_timeout_s: float = 5.0,
        client_id: str = "agentaudit-sdk",
        **producer_options: Any,
    ) -> None:
        if acks not in (0, 1, -1, "all"):
            raise ValueError(f"acks must be 0, 1, -1 or 'all', not {acks!r}")
        compression = resolve_compression(compression)
        if send_timeout_s >= request_timeout_ms / 1000:
            raise ValueError(
                "send_timeout_s must be shorter than request_timeout_ms (the batch TTL)"
            )
        self.connection = as_connection(bootstrap)
        self.bootstrap = self.connection.bootstrap
        self.topic = topic
        self._options: dict[str, Any] = {
            "client_id": client_id,
            "acks": acks,
            "compression_type": compression,
            "enable_idempotence": enable_idempotence,
            "linger_ms": linger_ms,
            "request_timeout_ms": request_timeout_ms,
            "retry_backoff_ms": retry_backoff_ms,
            **producer_options,
        }
        self._connect_timeout_s = connect_timeout_s
        self._send_timeout_s = send_timeout_s
        self._close_timeout_s = close_timeout_s
        self._producer: Any = None
        self._companion_factories: list[Callable[[], Coroutine[Any, Any, None]]] = []
        self._companions: list[asyncio.Task[None]] = []

    def add_companion(self, factory: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run `factory()` as a task on the client's background loop for the transport's
        lifetime: created by the first `start()` (whether or not it connects), cancelled and
        awaited by `close()`. The SDK's kill-switch listener rides on this, because the
        client drives its transport on that loop and closes it exactly once, at shutdown."""
        self._companion_factories.append(factory)

    async def start(self) -> None:
        """(Re)create the producer and connect within `connect_timeout_s`."""
        if len(self._companions) < len(self._companion_factories):
            loop = asyncio.get_running_loop()
            for factory in self._companion_factories[len(self._companions) :]:
                self._companions.append(loop.create_task(factory()))
        await self._close_producer()
        producer = new_producer(self.connection, **self._options)
        try:
            await start(producer, self.connection, self._connect_timeout_s)
        except KafkaSetupError as exc:  # says which: TLS, credentials, or nothing answering
            raise TransportUnavailable(str(exc)) from exc
        self._producer = producer

    async def send_batch(self, records: list[tuple[bytes, bytes]]) -> None:
        """Send every record, then wait for all acknowledgements, within `send_timeout_s`.
        Records refused for good (too large) are reported by `RecordsRefused` once all the
        others are acknowledged."""
        producer = self._producer
        if producer is None:
            raise TransportUnavailable("Kafka producer not started")
        too_large = _too_large_errors()
        loop = asyncio.get_running_loop()
        # aiokafka retries without end while a dead leader's address is still known; bound it.
        deadline = loop.time() + self._send_timeout_s
        futures: dict[int, asyncio.Future[Any]] = {}  # by index in the batch
        refused: dict[int, BaseException] = {}
        try:
            async with asyncio.timeout_at(deadline):
                # send() only appends to the accumulator; the futures resolve on the broker's
                # acks, so the whole batch is in flight at once.
                for index, (key, value) in enumerate(records):
                    try:
                        futures[index] = await producer.send(self.topic, value=value, key=key)
                    except too_large as exc:  # aiokafka checks max_request_size before sending
                        refused[index] = exc
            pending: set[asyncio.Future[Any]] = set()
            if futures:
                _, pending = await asyncio.wait(
                    futures.values(), timeout=max(0.0, deadline - loop.time())
                )
        except Exception as exc:
            await self._abort(list(futures.values()), exc)
            raise TransportUnavailable(f"Kafka send failed: {exc!r}") from exc
        failures: list[BaseException] = []
        for index, future in futures.items():
            error = None if future in pending or future.cancelled() else future.exception()
            if isinstance(error, too_large):  # the broker's MESSAGE_TOO_LARGE & co.
                refused[index] = error
            elif error is not None:
                failures.append(error)
        if pending or failures:
            reason = (
                failures[0] if failures else TimeoutError(f"no ack within {self._send_timeout_s}s")
            )
            await self._abort(list(futures.values()), reason)
            raise TransportUnavailable(
                f"{len(pending) + len(failures)} of {len(records)} records not "
                f"acknowledged: {reason!r}"
            ) from reason
        if refused:
            raise RecordsRefused(refused)

    def after_fork_in_child(self) -> None:
        """In a forked child: forget the parent's producer and companion tasks (they live on
        the parent's loop, which does not run here); the next `start()` makes the child's.
        The parent's producer is marked closed here: collected in the child, it logged
        "Unclosed AIOKafkaProducer" through the parent's loop in every forked worker."""
        if self._producer is not None:
            self._producer._closed = True  # noqa: SLF001 - aiokafka's own flag, as in _abort
        self._producer = None
        self._companions = []

    async def close(self) -> None:
        """Stop the companions and the producer (the client calls this once, at shutdown)."""
        companions, self._companions = self._companions, []
        self._companion_factories.clear()
        for task in companions:
            task.cancel()
        if companions:
            # bounded: a companion's own cleanup (closing a consumer) must not hang shutdown
            await asyncio.wait(companions, timeout=self._close_timeout_s)
        await self._close_producer()

    async def _close_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await self._stop(producer)

    async def _abort(self, futures: list[asyncio.Future[Any]], reason: BaseException) -> None:
        """Kill the producer so that none of the records it still holds reaches the broker
        after the client has spooled them (see the module docstring)."""
        producer, self._producer = self._producer, None
        for future in futures:  # retrieve their errors: no "exception never retrieved" noise
            future.add_done_callback(lambda f: f.cancelled() or f.exception())
        # aiokafka has no abort(): cancel its sender task (private attribute, pinned version)
        # so no new request leaves, then close its connections. Its pending futures are left
        # unresolved on purpose (stop() would wait to flush them). If the internals ever
        # change, fall back to a plain bounded stop().
        try:
            async with asyncio.timeout(self._close_timeout_s):
                await _close_sender(producer)
                await producer.client.close()
                # what stop() would set; silences "Unclosed" on GC
                producer._closed = True  # noqa: SLF001 - aiokafka's own flag
        except Exception:  # noqa: BLE001 - any surprise in the internals: fall back to stop()
            await self._stop(producer)

    async def _stop(self, producer: Any) -> None:
        # stop() flushes what is pending; bound it, since the broker may be the thing that is gone.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self._close_timeout_s):
                await producer.stop()


def _too_large_errors() -> tuple[type[Exception], ...]:
    """aiokafka's errors for a record the producer or broker will never take: retrying it
    cannot succeed. (An authorization or unknown-topic error is not one: an operator can
    fix it, so those records are spooled and retried like any outage.)"""
    from aiokafka.errors import (
        MessageSizeTooLargeError,
        RecordListTooLargeError,
        RecordTooLargeError,
    )

    return MessageSizeTooLargeError, RecordListTooLargeError, RecordTooLargeError


async def _close_sender(producer: Any) -> None:
    """Cancel and await aiokafka's sender task. A task cancelled before it first ran re-raises
    its CancelledError from the await (a send refused right after `start()`): that one is not
    ours and must not escape, or it ends the client's background thread; our own
    cancellation (the task is being cancelled) still propagates."""
    try:
        await producer._sender.close()  # noqa: SLF001 - aiokafka has no abort()
    except asyncio.CancelledError:
        if cancelled_ourselves():
            raise
