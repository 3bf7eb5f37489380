"""The real client: `emit` on the agent's side, a background thread for everything else.

Works the same from sync and async code ("sync facade"): `emit` and the helpers only touch
a contextvar and append to a deque, so they never block an event loop; the background
thread does validation, redaction, batching, I/O and retries. Sync agents call `flush()` /
`shutdown()`; async agents await `aflush()` / `ashutdown()`, which wait on the same futures
without blocking their loop.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import importlib
import logging
import os
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from uuid_utils import uuid7

from agentaudit_sdk import exit_signal
from agentaudit_sdk.api import BaseClient
from agentaudit_sdk.background import Worker
from agentaudit_sdk.backoff import Backoff
from agentaudit_sdk.clock import SYSTEM_CLOCK, TimeSource
from agentaudit_sdk.context import CURRENT
from agentaudit_sdk.kafka import KafkaTransport
from agentaudit_sdk.killswitch import KillSwitch
from agentaudit_sdk.outbox import Outbox
from agentaudit_sdk.pipeline import STEP_TYPES, EventEncoder
from agentaudit_sdk.spool_memory import MemorySpool, SpoolBackend
from agentaudit_sdk.stats import ClientStats, Counters, WarnLimiter
from agentaudit_sdk.transport import Transport

if TYPE_CHECKING:
    from pydantic import BaseModel

    from agentaudit_schemas.pricing import Pricing
    from agentaudit_sdk.request_budget import RequestEstimate
    from agentaudit_sdk.settings import SdkSettings

logger = logging.getLogger("agentaudit.producers")


def _finish_pending_imports() -> None:
    """Before a fork: wait for an import of aiokafka that another thread (the client's
    background thread, on its first connect) has under way. A child forked in the middle
    inherits the half-run module for good: every connect there failed with "cannot import
    name 'AIOKafkaProducer' from partially initialized module 'aiokafka'", so the child's
    events only ever reached its spool (gunicorn --preload forks right after the client is
    made, when that import runs). importlib returns once the owner has finished."""
    for name, module in list(sys.modules.items()):
        spec = getattr(module, "__spec__", None)
        if (name == "aiokafka" or name.startswith("aiokafka.")) and getattr(
            spec, "_initializing", False
        ):
            with contextlib.suppress(Exception):  # ours never to break a fork over
                importlib.import_module(name)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_finish_pending_imports)


class Client(BaseClient):
    """Audit event client modelled on OpenTelemetry's BatchProcessor.

    `transport`: where batches go (`KafkaTransport`, or `InMemoryTransport` in tests).
    Envelope defaults (`tenant_id`, `agent_id`, …) apply unless bound or overridden per call.
    `redact`: PII/secret redaction of content fields before events leave the process.
    `max_queue`: events waiting for the background thread; beyond it `emit` drops and counts.
    `batch_size` / `linger_ms`: a batch goes out when full or after at most `linger_ms`.
    `spool`: where batches wait while the broker is unreachable: a disk `Spool` (survives
    restarts) or, by default, a bounded `MemorySpool`. `clock` stamps `occurred_at` and
    measures latencies. `reconnect_backoff`: (first, max) seconds between reconnect attempts.

    Kill switch (`client.control`): with a `KafkaTransport` and `kill_switch=True`, a
    background listener follows `control_topic` and `budgets_topic` (defaults: the pipeline's
    `agentaudit.control.v1` and `agentaudit.budgets.v1`); `check()`, `check_request()` and the
    helpers then refuse blocked work with `Blocked` / `RequestBudgetExceeded`. With another
    transport, feed it with `client.control.apply(...)`. `pricing`: the table request
    ceilings are priced with (default: the latest shipped one, loaded on first use).

    Blindness (`client.control.staleness_s`, README "When the kill switch is blind"): the view
    counts as stale `stale_after_s` after the stream jobs' newest heartbeat (default: three of
    their intervals, 15 s); going stale and recovering are counted and logged once each.
    `fail_closed_after_s`: refuse work (`Blocked`, reason `kill_switch_blind`) while the view
    is older than this: seconds for every tenant, or a tenant → seconds map (others fail open).

    `atexit_timeout_s`: how long the shutdown at exit may take. `handle_sigterm`: when SIGTERM
    has Python's default disposition (which ends the process without atexit, losing what is
    queued), install a handler that shuts the clients down first, then lets SIGTERM end the
    process as before (`agentaudit_sdk.exit_signal`); an application's own handler is kept.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        tenant_id: str | None = None,
        agent_id: str | None = None,
        agent_version: str = "0.0.0",
        deployment: str = "prod",
        variant: str | None = None,
        user_id: str | None = None,
        redact: bool = True,
        max_queue: int = 100_000,
        batch_size: int = 512,
        linger_ms: float = 100.0,
        spool: SpoolBackend | None = None,
        clock: TimeSource = SYSTEM_CLOCK,
        reconnect_backoff: tuple[float, float] = (0.5, 30.0),
        connect_timeout_s: float = 30.0,
        max_recent_errors: int = 32,
        atexit_timeout_s: float = 5.0,
        kill_switch: bool = True,
        control_topic: str | None = None,
        budgets_topic: str | None = None,
        pricing: Pricing | None = None,
        stale_after_s: float | None = None,
        fail_closed_after_s: float | Mapping[str, float] | None = None,
        handle_sigterm: bool = True,
    ) -> None:
        if max_queue < 1 or batch_size < 1 or linger_ms <= 0:
            raise ValueError("max_queue and batch_size must be >= 1 and linger_ms > 0")
        self.clock = clock
        self._wall_ns = clock.time_ns
        self._max_queue = max_queue
        self._batch_size = batch_size
        self._closed = False
        self._counters = Counters()
        self._errors: deque[Exception] = deque(maxlen=max_recent_errors)
        self._spool: SpoolBackend = spool if spool is not None else MemorySpool()
        self._warn = WarnLimiter(logger)
        self.control = KillSwitch(
            enabled=kill_switch,
            clock=clock,
            pricing=pricing,
            stale_after_s=stale_after_s,
            fail_closed_after_s=fail_closed_after_s,
        )
        self._defaults = defaults = {
            "tenant_id": tenant_id,
            "agent_id": agent_id,
            "agent_version": agent_version,
            "deployment": deployment,
            "variant": variant,
            "user_id": user_id,
        }
        outbox = Outbox(
            transport=transport,
            spool=self._spool,
            counters=self._counters,
            errors=self._errors,
            batch_size=batch_size,
            backoff=Backoff(*reconnect_backoff),
            connect_timeout_s=connect_timeout_s,
        )
        self._worker = Worker(
            outbox=outbox,
            encoder=EventEncoder(defaults, redact=redact),
            counters=self._counters,
            errors=self._errors,
            batch_size=batch_size,
            linger_s=linger_ms / 1000.0,
        )
        self._queue = self._worker.queue
        self._shutdown_lock = threading.Lock()
        self._stop: concurrent.futures.Future[bool] | None = None
        self._stop_deadline: float | None = None  # time.monotonic
        self._atexit_timeout_s = atexit_timeout_s
        if kill_switch and isinstance(transport, KafkaTransport):
            self._listen(transport, control_topic, budgets_topic, reconnect_backoff)
        else:
            self.control.ready.set()  # nothing to catch up with
        self._worker.thread.start()
        atexit.register(self._atexit)
        if handle_sigterm:
            exit_signal.watch(self, atexit_timeout_s)
        if hasattr(os, "register_at_fork"):  # a weak reference: the hook cannot be removed
            restart = weakref.WeakMethod(self._after_fork_in_child)
            os.register_at_fork(after_in_child=lambda: (hook := restart()) and hook())

    @classmethod
    def from_settings(cls, settings: SdkSettings, **options: Any) -> Client:
        """A client producing to `settings.kafka_bootstrap` / `settings.events_topic`, spooling
        to a slot under `settings.spool_dir`, its kill switch following the control and budgets
        topics there; `options` are the constructor's keyword arguments."""
        from agentaudit_sdk.spool import Spool

        transport = KafkaTransport(settings.kafka_connection(), settings.events_topic)
        spool: SpoolBackend | None = None
        try:
            spool = Spool.claim(settings.spool_dir)
        except OSError as exc:  # read-only disk, all slots taken: degrade to memory, say so
            logger.warning(
                "agentaudit: no disk spool under %s (%s); buffering in memory",
                settings.spool_dir,
                exc,
            )
        options.setdefault("control_topic", settings.control_topic)
        options.setdefault("budgets_topic", settings.budgets_topic)
        return cls(transport, spool=spool, **options)

    def _listen(
        self,
        transport: KafkaTransport,
        control_topic: str | None,
        budgets_topic: str | None,
        backoff: tuple[float, float],
    ) -> None:
        from agentaudit_sdk.control_listener import ControlListener
        from agentaudit_sdk.settings import BUDGETS_TOPIC, CONTROL_TOPIC

        listener = ControlListener(
            transport.connection,
            self.control,
            control_topic=control_topic or CONTROL_TOPIC,
            budgets_topic=budgets_topic or BUDGETS_TOPIC,
            backoff=Backoff(*backoff),
        )
        transport.add_companion(listener.run)  # runs on the background loop, stops at shutdown

    # -- the kill switch: raises into the agent on purpose ------------------------------------

    def _who(self) -> tuple[str | None, str | None, str | None]:
        fields = CURRENT.get().fields
        d = self._defaults
        return (
            fields.get("tenant_id") or d["tenant_id"],
            fields.get("user_id") or d["user_id"],
            fields.get("agent_id") or d["agent_id"],
        )

    def _tenant(self) -> str | None:
        return CURRENT.get().fields.get("tenant_id") or self._defaults["tenant_id"]

    def check(self, tool: str | None = None) -> None:
        """Raise `Blocked` if the kill switch blocks work (or calls to `tool`) for the bound
        tenant, user and agent. Cheap when nothing is blocked; the helpers call it for you."""
        control = self.control
        if control.fail_closed:  # a tenant chose fail-closed: a clock read and a compare
            control.blind.check(self._tenant)
        if not control.enabled or not control.state.any_blocks:
            return
        tenant, user, agent = self._who()
        control.check(tenant, user, agent, tool)

    def check_request(
        self,
        provider: str,
        model: str,
        *,
        input_tokens: int,
        max_output_tokens: int,
        cached_input_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> RequestEstimate | None:
        """Raise `RequestBudgetExceeded` if this LLM call's worst case (the prompt plus
        `max_output_tokens`, priced by the pipeline's table) exceeds a `request` budget of the
        bound tenant; returns the estimate, or None when no request budget applies."""
        tenant, user, _ = self._who()
        return self.control.check_request(
            tenant,
            user,
            provider,
            model,
            input_tokens=input_tokens,
            max_output_tokens=max_output_tokens,
            cached_input_tokens=cached_input_tokens,
            cache_write_tokens=cache_write_tokens,
        )

    # -- the agent's side: tiny, never blocks, never raises -----------------------------------

    def emit(self, type: str, payload: Mapping[str, Any], **envelope: Any) -> None:
        """Queue one event. Stamps event_id (UUIDv7) and occurred_at now and captures the bound
        context; everything else happens on the background thread. The client takes ownership
        of `payload`: do not mutate it afterwards. Invalid events are counted, not raised."""
        try:
            bound = CURRENT.get()
            if bound.run is not None and type in STEP_TYPES:
                bound.run.steps += 1
            self._enqueue((type, payload, bound, envelope, uuid7(), self._wall_ns()))
        except Exception as exc:  # noqa: BLE001 - e.g. a broken injected clock: never the agent's problem
            self._warn.warn("agentaudit: emit failed: %r", exc)

    def emit_event(self, event: BaseModel) -> None:
        """Queue an already-built event model (its own envelope is kept as is)."""
        try:
            self._enqueue(event)
        except Exception as exc:  # noqa: BLE001 - emit_event never raises into the agent
            self._warn.warn("agentaudit: emit_event failed: %r", exc)

    def _enqueue(self, item: Any) -> None:
        queue = self._queue
        if self._closed or len(queue) >= self._max_queue:
            self._counters.drop_on_emit(self._closed)
            return
        queue.append(item)
        if len(queue) >= self._batch_size and not self._worker.wake_pending:
            self._worker.wake()  # a full batch waits: don't make it wait for the linger timer

    # -- lifecycle ---------------------------------------------------------------------------

    def _after_fork_in_child(self) -> None:
        """A forked child (a pre-fork server's worker) has the client but not its thread:
        give it its own thread, producer and spool, so its events are delivered too."""
        if self._closed:
            return
        for_child = getattr(
            self._spool, "for_child", None
        )  # a spool of the agent's own may lack it
        self._spool = for_child() if callable(for_child) else MemorySpool()
        self._counters.reset()  # the child's own figures, from zero
        self._worker.outbox.reset_in_child(self._spool)
        self._worker.restart_in_child()
        # A multiprocessing child (Process, Pool worker) ends with os._exit once its target
        # returns: atexit never runs there, and everything it emitted since its last flush
        # (all of it, for most targets) was lost without a count. threading's exit hooks run
        # on that path (multiprocessing calls threading._shutdown) and on a normal exit.
        register = getattr(threading, "_register_atexit", None)  # CPython, private, 3.9+
        if callable(register):
            stop = weakref.WeakMethod(self._atexit)
            with contextlib.suppress(RuntimeError):  # forked while the interpreter exits
                register(lambda: (hook := stop()) and hook())

    def flush(self, timeout: float | None = None, *, delivered: bool = False) -> bool:
        """Block until every event emitted before this call was acknowledged by the broker or
        written to the spool (or counted as invalid/dropped); False on timeout.

        `delivered=True` also waits for the spool to replay them: True only once the broker
        has acknowledged everything emitted before the call."""
        if threading.current_thread() is self._worker.thread:
            return False  # would wait on itself
        try:
            return self._worker.request_flush(delivered).result(timeout)
        except concurrent.futures.TimeoutError:
            return False

    async def aflush(self, timeout: float | None = None, *, delivered: bool = False) -> bool:
        """`flush` for async agents: awaits the same future without blocking the event loop."""
        return await _await(self._worker.request_flush(delivered), timeout)

    def _begin_shutdown(self, timeout: float | None) -> concurrent.futures.Future[bool]:
        with self._shutdown_lock:
            if self._stop is None:
                self._closed = True
                deadline = None if timeout is None else time.monotonic() + timeout
                self._stop_deadline = deadline
                self._stop = self._worker.request_stop(deadline)
                atexit.unregister(self._atexit)
            return self._stop

    def shutdown(self, timeout: float | None = None) -> bool:
        """Flush, try a last spool replay, close transport and spool, stop the thread.
        Idempotent; True if nothing was lost: everything sent or left in a disk spool, and
        nothing dropped since the client started (any `stats.dropped_*`)."""
        try:
            ok = self._begin_shutdown(timeout).result(timeout)
        except concurrent.futures.TimeoutError:
            return False
        self._worker.thread.join(self._time_left())  # it closes the transport meanwhile
        return ok

    async def ashutdown(self, timeout: float | None = None) -> bool:
        """`shutdown` for async agents, without blocking the event loop."""
        ok = await _await(self._begin_shutdown(timeout), timeout)
        await asyncio.to_thread(self._worker.thread.join, self._time_left())
        return ok

    def _time_left(self) -> float | None:
        """Until the first shutdown's deadline (None: no deadline)."""
        deadline = self._stop_deadline
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    def _atexit(self) -> None:
        self.shutdown(self._atexit_timeout_s)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.shutdown()

    # -- observability -----------------------------------------------------------------------

    @property
    def stats(self) -> ClientStats:
        c = self._counters
        depth = max(0, len(self._queue) - self._worker.markers)
        return ClientStats(
            enqueued=c.dequeued + depth,
            sent=c.sent,
            spooled=c.spooled,
            replayed=c.replayed,
            dropped_queue_full=c.dropped_queue_full,
            dropped_spool_full=c.dropped_spool_full,
            dropped_closed=c.dropped_closed,
            dropped_at_shutdown=c.dropped_at_shutdown,
            dropped_refused=c.dropped_refused,
            invalid=c.invalid,
            queue_depth=depth,
            spool_depth=len(self._spool),
            spool_torn=self._spool.torn,
        )

    @property
    def recent_errors(self) -> list[Exception]:
        return list(self._errors)

    @property
    def connected(self) -> bool:
        """Whether the background thread currently has a working transport."""
        return self._worker.outbox.connected


async def _await(future: concurrent.futures.Future[bool], timeout: float | None) -> bool:
    try:
        async with asyncio.timeout(timeout):
            # shield: a caller's timeout must not cancel the shared future other waiters use
            return await asyncio.shield(asyncio.wrap_future(future))
    except TimeoutError:
        return False
