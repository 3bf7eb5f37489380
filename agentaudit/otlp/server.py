"""The OTLP/HTTP receiver: `POST /v1/traces` and `POST /v1/logs` on aiohttp.

Answers as OTLP exporters expect (OTLP spec, "OTLP/HTTP Response"):

| status | when | exporter |
| --- | --- | --- |
| 200 + `Export*ServiceResponse` | every record acknowledged by Kafka (1) | done |
| 400 | body does not decode | drops the batch |
| 401 / 403 | no or unknown API key / revoked key | drops the batch |
| 408 | the body took longer than `AGENTAUDIT_OTLP_READ_TIMEOUT_S` to arrive | drops |
| 413 | body over `AGENTAUDIT_OTLP_MAX_BODY_BYTES` (also after gzip inflation) | drops |
| 415 | neither protobuf nor JSON, or an encoding other than gzip | drops |
| 429 + Retry-After | over `AGENTAUDIT_OTLP_MAX_INFLIGHT` requests (4× that reading) | retries |
| 503 + Retry-After | no broker acknowledgement for `AGENTAUDIT_OTLP_SEND_TIMEOUT_S` | retries |

(1) `partial_success` counts what was dead-lettered.

200 is only sent after the broker acknowledged every record of the request (acks=all), the
dead letters included: a crash before that loses nothing the exporter was told is stored.
A retried batch after a 503 is harmless: event ids are deterministic and the sink drops the
copies. Error bodies are a `google.rpc.Status` (code, message) in the request's encoding.

No request holds up the others: a body is read before the request takes one of the
`otlp_max_inflight` slots (a slow sender holds only its own connection, and that for at most
`otlp_read_timeout_s`), and a body over `INLINE_BYTES` is inflated, decoded and mapped
(~150 µs of CPU per span, seconds for a large batch) on a small thread pool, not on the event
loop the receiver shares with the worker's sink.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from agentaudit.otlp import decode, ingest
from agentaudit.otlp.budget import ByteBudget, Held
from agentaudit.otlp.conns import CappedSite, connection_limit
from agentaudit.otlp.keys import Forbidden, KeyTable, Unauthorized, keys_path, presented_key
from agentaudit.settings import Settings
from agentaudit.sink.decode import not_after

log = logging.getLogger("agentaudit.otlp")

RETRY_AFTER_BUSY_S = 1
RETRY_AFTER_BROKER_S = 2
"""With the default 4 s send timeout, an exporter with the SDKs' 10 s budget for an export
(retries included; a Retry-After beyond what is left ends it) still gets its retry in."""
READERS_PER_SLOT = 4
"""Bodies being read at once, per `otlp_max_inflight` slot: bounds the memory held by clients
that are still sending, without letting them hold the slots."""
DECODE_THREADS = 4
"""Threads that inflate, decode and map bodies: CPU-bound under the GIL, so more add no
throughput; several let a small request finish beside a large one."""
INLINE_BYTES = 16 << 10
"""Bodies up to this size (inflated) are decoded and mapped on the event loop: ~60 spans, a
few ms; the hop to a thread and back costs about as much CPU as such a request (measured
170 µs on a one-span request, which itself takes 175 µs)."""


def _status_body(code: int, message: str, media: str) -> bytes:
    """A `google.rpc.Status` (code 1, message 2) without a googleapis dependency."""
    if media == decode.JSON:
        import orjson

        return orjson.dumps({"code": code, "message": message})
    text = message.encode()

    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            b, n = n & 0x7F, n >> 7
            out.append(b | (0x80 if n else 0))
            if not n:
                return bytes(out)

    return b"\x08" + varint(code) + b"\x12" + varint(len(text)) + text


def _export_response(response: Any, rejected_field: str, out: ingest.Outcome) -> Any:
    """`response` (an `Export*ServiceResponse`) with `partial_success` set when records were
    dead-lettered; `rejected_field` names the signal's count (`rejected_spans`, ...)."""
    if out.rejected:
        setattr(response.partial_success, rejected_field, out.rejected)
        response.partial_success.error_message = out.message()
    return response


def _traces_response(out: ingest.Outcome) -> Any:
    return _export_response(ExportTraceServiceResponse(), "rejected_spans", out)


def _logs_response(out: ingest.Outcome) -> Any:
    return _export_response(ExportLogsServiceResponse(), "rejected_log_records", out)


class BrokerUnavailable(Exception):
    """The broker did not take the request's records in time."""


class Sender:
    """One Kafka producer for the receiver, started on first use and again after a failure."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._producer: Any = None
        self._lock = asyncio.Lock()

    async def _get(self) -> Any:
        from agentaudit_sdk.kafka_config import producer as kafka_producer

        async with self._lock:
            if self._producer is None:
                # No idempotence: the local broker refuses it; a duplicate is dropped by event id.
                producer = kafka_producer(
                    self.settings.kafka_connection(),
                    client_id="agentaudit-otlp",
                    acks="all",
                    enable_idempotence=False,
                    linger_ms=5,
                    request_timeout_ms=int(self.settings.otlp_send_timeout_s * 1000),
                )
                try:
                    await producer.start()
                except BaseException:
                    await _quietly_stop(producer)
                    raise
                self._producer = producer
            return self._producer

    async def send(self, outcome: ingest.Outcome) -> None:
        """Every record of `outcome` acknowledged, or BrokerUnavailable when the broker
        acknowledged none of them for `otlp_send_timeout_s`.

        The deadline is renewed by each acknowledgement, not set for the whole request: a
        large batch (60,000 spans, within the body limit, take ~8 s to send to a healthy
        local broker) was answered 503 "broker unavailable" on every retry, never stored
        whole, while a stalled broker is still answered 503 in `otlp_send_timeout_s`."""
        from aiokafka.errors import KafkaError

        loop = asyncio.get_running_loop()
        progress = [loop.time()]
        work = asyncio.ensure_future(self._send_all(outcome, progress))
        try:
            while not work.done():
                left = progress[0] + self.settings.otlp_send_timeout_s - loop.time()
                if left <= 0:
                    raise TimeoutError(
                        f"nothing acknowledged in {self.settings.otlp_send_timeout_s} s"
                    )
                await asyncio.wait({work}, timeout=left)
            work.result()
        except (TimeoutError, KafkaError, OSError) as exc:
            await _cancel(work)
            await self.reset()  # a fresh producer next time: the old one may hold a dead connection
            raise BrokerUnavailable(f"{type(exc).__name__}: {exc}") from None
        finally:
            await _cancel(work)  # the request itself cancelled: its sends go with it

    async def _send_all(self, outcome: ingest.Outcome, progress: list[float]) -> None:
        """Send `outcome`'s records and wait for their acknowledgements; each one received
        (and the producer's start) sets `progress[0]` to the loop's time."""
        s = self.settings
        loop = asyncio.get_running_loop()

        def acked(done: asyncio.Future[Any] | None) -> None:
            if done is None or (not done.cancelled() and done.exception() is None):
                progress[0] = loop.time()

        producer = await self._get()
        acked(None)
        pending = []
        at = outcome.timestamp_ms  # the time the events were judged against (sink: the same)
        for k, v in outcome.events:
            pending.append(await producer.send(s.events_topic, v, key=k, timestamp_ms=at))
            pending[-1].add_done_callback(acked)
        for k, v, h in outcome.dead_letters:
            pending.append(await producer.send(s.dlq_topic, v, key=k, headers=h, timestamp_ms=at))
            pending[-1].add_done_callback(acked)
        await asyncio.gather(*pending)

    async def reset(self) -> None:
        async with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            await _quietly_stop(producer)


async def _cancel(task: asyncio.Future[Any]) -> None:
    if not task.done():
        task.cancel()
        with contextlib.suppress(BaseException):
            await task


async def _quietly_stop(client: Any) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(5):
            await client.stop()


def _prepare(
    parse: Callable[[bytes, str], Any],
    mapping: Callable[..., ingest.Outcome],
    tenant: str,
    body: bytes,
    encoding: str | None,
    media: str,
    not_after_ms: float | None,
    limit: int,
) -> ingest.Outcome:
    """Inflate (at most `limit` bytes), decode and map one body: pure and CPU-bound; a large
    body is run off the event loop (`Receiver._outcome`)."""
    message = parse(decode.inflate(body, encoding, limit), media)
    return mapping(tenant, message, not_after_ms=not_after_ms)


class Receiver:
    """The receiver's state: keys, producer, counters; `app` is its aiohttp application."""

    def __init__(
        self,
        settings: Settings,
        keys: KeyTable | None = None,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.settings = settings
        self.clock_ms = clock_ms
        self.keys = keys if keys is not None else KeyTable(keys_path(settings))
        self.sender = Sender(settings)
        self._inflight = 0
        self._reading = 0
        self._serving: set[object] = set()
        self._budget = ByteBudget(settings.otlp_max_inflight_bytes)
        self._pool = ThreadPoolExecutor(DECODE_THREADS, thread_name_prefix="otlp-decode")
        self.counters = {
            "requests": 0,
            "items": 0,
            "events": 0,
            "dead_letters": 0,
            "refused": 0,
            "unavailable": 0,
            "read_timeouts": 0,
            "aborted": 0,
        }
        self.app = web.Application(client_max_size=settings.otlp_max_body_bytes)
        self.app.router.add_post("/v1/traces", self._traces)
        self.app.router.add_post("/v1/logs", self._logs)

    async def _traces(self, request: web.Request) -> web.Response:
        return await self._export(request, decode.traces, ingest.traces, _traces_response)

    async def _logs(self, request: web.Request) -> web.Response:
        return await self._export(request, decode.logs, ingest.logs, _logs_response)

    def _error(
        self, status: int, message: str, media: str, retry_after: int | None = None
    ) -> web.Response:
        self.counters["refused"] += 1
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        return web.Response(
            status=status,
            body=_status_body(status, message, media),
            content_type=media,
            headers=headers,
        )

    @property
    def held_bytes(self) -> int:
        """Bytes the requests under way hold (bodies, then records): see budget.py."""
        return self._budget.used

    def serving(self, connection: object) -> bool:
        """Whether `connection` (an aiohttp request handler) is in an export request."""
        return connection in self._serving

    async def _export(
        self,
        request: web.Request,
        parse: Callable[[bytes, str], Any],
        mapping: Callable[..., ingest.Outcome],
        respond: Callable[[ingest.Outcome], Any],
    ) -> web.Response:
        self._serving.add(request.protocol)
        try:
            return await self._answer(request, parse, mapping, respond)
        finally:
            self._serving.discard(request.protocol)

    async def _answer(
        self,
        request: web.Request,
        parse: Callable[[bytes, str], Any],
        mapping: Callable[..., ingest.Outcome],
        respond: Callable[[ingest.Outcome], Any],
    ) -> web.Response:
        self.counters["requests"] += 1
        try:
            media = decode.media_type(request.headers.get("Content-Type"))
        except decode.UnsupportedMediaType as exc:
            return self._error(415, str(exc), decode.JSON)
        try:
            self.keys.reload()
            tenant = self.keys.tenant(
                presented_key(
                    request.headers.get("Authorization"), request.headers.get("x-api-key")
                )
            )
        except Unauthorized as exc:
            return self._error(401, str(exc), media)
        except Forbidden as exc:
            return self._error(403, str(exc), media)
        limit = self.settings.otlp_max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return self._error(413, f"body of {request.content_length} bytes > {limit}", media)
        held = self._budget.take()
        if held is None:
            budget = self.settings.otlp_max_inflight_bytes
            return self._error(429, f"receiver holds {budget} bytes", media, RETRY_AFTER_BUSY_S)
        try:
            return await self._held(request, parse, mapping, respond, media, tenant, held)
        finally:
            held.release()

    async def _held(
        self,
        request: web.Request,
        parse: Callable[[bytes, str], Any],
        mapping: Callable[..., ingest.Outcome],
        respond: Callable[[ingest.Outcome], Any],
        media: str,
        tenant: str,
        held: Held,
    ) -> web.Response:
        body = await self._read(request, media, held)
        if isinstance(body, web.Response):
            return body
        if self._inflight >= self.settings.otlp_max_inflight:
            return self._error(429, "receiver busy", media, RETRY_AFTER_BUSY_S)
        self._inflight += 1
        try:
            try:
                encoding = request.headers.get("Content-Encoding")
                # The records' Kafka timestamp, fixed now: the sink dead-letters an event dated
                # more than max_clock_skew_s after it (occurred_at_in_future), so that check is
                # made here too, on the same time, and such a span is reported as rejected (it
                # was answered 200 and then dead-lettered by the sink, unseen by the exporter).
                now_ms = self.clock_ms()
                not_after_ms = not_after(now_ms, self.settings.max_clock_skew_s * 1000)
                out = await self._outcome(
                    partial(_prepare, parse, mapping, tenant, body, encoding, media, not_after_ms)
                )
                out.timestamp_ms = now_ms
                held.resize(len(body) + out.size())
            except decode.TooLarge as exc:
                return self._error(413, str(exc), media)
            except decode.UnsupportedMediaType as exc:
                return self._error(415, str(exc), media)
            except decode.BadRequest as exc:
                return self._error(400, str(exc), media)
            try:
                await self.sender.send(out)
            except BrokerUnavailable as exc:
                self.counters["unavailable"] += 1
                log.warning("OTLP export for %s not acknowledged by the broker: %s", tenant, exc)
                return self._error(
                    503, "broker unavailable, retry later", media, RETRY_AFTER_BROKER_S
                )
        finally:
            self._inflight -= 1
        self.counters["items"] += out.items
        self.counters["events"] += len(out.events)
        self.counters["dead_letters"] += len(out.dead_letters)
        if out.rejected:
            log.warning("OTLP export for %s: %s", tenant, out.message())
        return web.Response(status=200, body=decode.encode(respond(out), media), content_type=media)

    async def _outcome(self, prepare: Callable[[int], ingest.Outcome]) -> ingest.Outcome:
        """The request's records (`prepare(limit)`: `_prepare` of its body): a small body on
        the loop, a larger one on the pool (its inflation is tried inline only up to
        `INLINE_BYTES`, so a gzip bomb costs no more)."""
        limit = self.settings.otlp_max_body_bytes
        inline = min(limit, INLINE_BYTES)
        try:
            return prepare(inline)
        except decode.TooLarge:
            if inline == limit:
                raise
        return await asyncio.get_running_loop().run_in_executor(self._pool, prepare, limit)

    async def _read(self, request: web.Request, media: str, held: Held) -> bytes | web.Response:
        """The request's body, or the error response: 413 over the limit, 429 when too many
        bodies are being read or the byte budget is spent by others, 408 when it does not
        arrive within `otlp_read_timeout_s`. `held` counts the bytes as they arrive: a slow
        sender holds only what it sent (reserving its declared length let four slow senders
        of 16 MiB bodies lock every other exporter out of a 64 MiB budget)."""
        limit = self.settings.otlp_max_body_bytes
        if self._reading >= READERS_PER_SLOT * self.settings.otlp_max_inflight:
            return self._error(429, "receiver busy", media, RETRY_AFTER_BUSY_S)
        self._reading += 1
        try:
            async with asyncio.timeout(self.settings.otlp_read_timeout_s):
                chunks: list[bytes] = []
                async for chunk in request.content.iter_any():
                    chunks.append(chunk)
                    held.resize(held.n + len(chunk))
                    if held.n > limit:
                        response = self._error(413, f"body over {limit} bytes", media)
                        response.force_close()
                        return response
                    if self._budget.over(held):
                        budget = self.settings.otlp_max_inflight_bytes
                        response = self._error(
                            429, f"receiver holds {budget} bytes", media, RETRY_AFTER_BUSY_S
                        )
                        response.force_close()
                        return response
                return b"".join(chunks)
        except ConnectionResetError:
            # The client went away mid-body: nothing to answer, nothing taken (aiohttp logged
            # it as an unhandled error with a traceback, and no counter said where it went).
            self.counters["aborted"] += 1
            log.info("OTLP client disconnected before its body arrived")
            return web.Response(status=400)
        except TimeoutError:
            self.counters["read_timeouts"] += 1
            timeout = self.settings.otlp_read_timeout_s
            response = self._error(408, f"body not received within {timeout} s", media)
            response.force_close()  # the rest of the body is not worth waiting for
            return response
        finally:
            self._reading -= 1

    async def close(self) -> None:
        await self.sender.reset()
        await asyncio.to_thread(self._pool.shutdown)


async def serve_otlp(
    settings: Settings,
    stop: asyncio.Event,
    *,
    port: int | None = None,
    keys: KeyTable | None = None,
    on_ready: Callable[[Receiver, int], None] | None = None,
) -> Receiver:
    """Serve the receiver on `settings.otlp_host`:`port` (default `settings.otlp_port`) until
    `stop` is set; returns it (its counters) once closed."""
    receiver = Receiver(settings, keys)
    # auto_decompress off: gzip is inflated by `decode.inflate`, bounded by the body limit
    # (aiohttp's own inflation would hand over a gzip bomb's output before any check).
    # keepalive_timeout: an idle connection, or one still sending its headers, is closed after
    # otlp_idle_timeout_s (aiohttp's default under AppRunner is 3,630 s); see conns.py.
    runner = web.AppRunner(
        receiver.app,
        access_log=None,
        auto_decompress=False,
        keepalive_timeout=settings.otlp_idle_timeout_s,
    )
    await runner.setup()
    try:
        site = CappedSite(
            runner,
            settings.otlp_host,
            settings.otlp_port if port is None else port,
            limit=connection_limit(settings.otlp_max_connections),
            busy=receiver.serving,
            counters=receiver.counters,
            retry_after=RETRY_AFTER_BUSY_S,
        )
        await site.start()
        bound = runner.addresses[0][1] if runner.addresses else (port or settings.otlp_port)
        log.info(
            "OTLP/HTTP receiver on %s:%s (%d keys)", settings.otlp_host, bound, len(receiver.keys)
        )
        if on_ready is not None:
            on_ready(receiver, bound)
        await stop.wait()
    finally:
        await runner.cleanup()
        await receiver.close()
    return receiver
