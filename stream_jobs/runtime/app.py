"""The app layer: the faust app the stream jobs run in, with its tuned settings.

`make_app` builds an `AuditApp` (on the consumer layer's `FastTransport`, the batching
stream, a lean Monitor, a table manager without faust's 1 s start-up sleep). The app
declares what the consumer asks of it: `batched_topics` (set by `source_topic(batched=True)`)
and `commit_guard` (set by whoever keeps state that must be written before offsets are
committed). Stock faust's `Monitor` booked five counters per message (b +6–9 µs per event).

Tansu answers a group's first join after half the session timeout (stock 60 s → 31 s to
ready) → `broker_session_timeout=6`; plus no 1 s table sleep. Ready: stock 31 s (restart
109 s) → 3.0 s (restart 3.0 s); 1.0 s with a 2 s session.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, cast

import faust
from faust.sensors import Monitor
from faust.tables.manager import TableManager
from faust.types import TP, EventT, Message

from agentaudit.settings import Settings
from agentaudit_sdk.kafka_config import KafkaConnection
from stream_jobs.runtime.consumer import FastTransport
from stream_jobs.runtime.fairness import PARTITION_BUFFER_MAX
from stream_jobs.runtime.stream import BatchingStream, RawSchema


def _ignore(*_: Any, **__: Any) -> None:
    """A sensor hook that books nothing."""


class LeanMonitor(Monitor):
    """Skips per-message bookkeeping; keeps `stream_inbound_time` for the livelock check."""

    on_message_in = on_stream_event_out = on_message_out = track_tp_end_offset = _ignore  # type: ignore[assignment]

    def on_stream_event_in(self, tp: TP, offset: int, stream: Any, event: EventT) -> None:
        self.stream_inbound_time[tp] = time.monotonic()


class PromptTableManager(TableManager):
    """faust's TableManager without its fixed 1 s sleep before registering tables."""

    async def on_start(self) -> None:
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()


class AuditApp(faust.App):
    """`faust.App` on `FastTransport`; creates its data directory's parents on first start."""

    batched_topics: frozenset[str] = frozenset()
    """Topics whose records `FastConsumer` delivers as one `BatchMessage` per partition and
    poll; set by `source_topic(batched=True)`."""
    partition_buffer: int = PARTITION_BUFFER_MAX
    """Polled batches of one partition that may wait for the streams before `FastConsumer`
    stops fetching it (`stream_jobs.runtime.fairness`); set before the app starts."""
    commit_guard: Callable[[], AbstractAsyncContextManager[Any]] | None = None
    """Entered by `FastConsumer` around every offset commit, when set: the stream jobs write
    their state there, so every committed offset is covered by state already written."""

    _event_class: Any = None

    def create_event(self, key: Any, value: Any, headers: Any, message: Message) -> EventT:
        """faust's, without a settings look-up per message (faust's settings are slow to read)."""
        if self._event_class is None:
            self._event_class = self.conf.Event
        return cast(EventT, self._event_class(self, key, value, headers, message))

    def _new_transport(self) -> FastTransport:
        return FastTransport(self.conf.broker_consumer, self)

    async def on_first_start(self) -> None:
        self.conf.datadir.mkdir(parents=True, exist_ok=True)
        await super().on_first_start()


def make_app(settings: Settings, *, app_id: str | None = None, **overrides: Any) -> AuditApp:
    """The stream-jobs app with the tuned settings; `overrides` are faust settings. Its id
    (group, changelog prefix) is `app_id`, else `settings.jobs_group`.

    Non-default settings, why, and the measured effect (CPU per event from ablation runs of
    `faust_measure` stages b/c at load average 7–8, so ±3 µs is noise):

    - `store="memory://"`: tables live in memory, rebuilt from their changelog on start.
    - `value_serializer="raw"`: topics deliver bytes, jobs decode them (orjson, pydantic).
      Tables must name their own serializers (e.g. a `faust.Schema` with JSON values).
    - `processing_guarantee="at_least_once"`: no transactions, so no idempotent producer
      (the local broker rejects InitProducerId).
    - `topic_partitions=settings.partitions`; `table_standby_replicas=0`: a standby reads
      every changelog twice over; a restarted worker recovers from the changelog anyway.
    - `web_enabled=False`: no HTTP server, no port to collide on.
    - `broker_session_timeout=6.0` (Kafka's default minimum), heartbeat 1 s: ready in 3.0 s
      instead of 31 s (the local broker answers a first join after half the session).
    - `broker_max_poll_records=1000`, `stream_buffer_maxsize=8192`: a poll fits in the
      buffer's headroom, so delivery rarely blocks (stock None/4096: b +4–6 µs; c: noise).
    - `cython_optimizations=True`: faust's opt-in queue fast path (stock no-op agent 5.9k →
      10.1k/s, one run; within noise once the rest is tuned).
    - `Monitor=LeanMonitor` (stock: b +6–9 µs, c +2 µs), `Stream=BatchingStream` (stock
      `take`: c +8 µs and 10–14k/s), `TableManager=PromptTableManager` (−1 s start-up).
    - `datadir=settings.data_dir / "faust"`, not the current directory.
    - the broker, TLS and SASL from `settings.kafka_connection()` (`faust_broker_settings`).
    """
    conf: dict[str, Any] = {
        **faust_broker_settings(settings.kafka_connection()),
        "store": "memory://",
        "value_serializer": "raw",
        "processing_guarantee": "at_least_once",
        "topic_partitions": settings.partitions,
        "table_standby_replicas": 0,
        "web_enabled": False,
        "broker_session_timeout": 6.0,
        "broker_heartbeat_interval": 1.0,
        "broker_max_poll_records": 1000,
        "stream_buffer_maxsize": 8192,
        "cython_optimizations": True,
        "Monitor": LeanMonitor,
        "Stream": BatchingStream,
        "TableManager": PromptTableManager,
        "datadir": settings.data_dir / "faust",
    }
    conf.update(overrides)
    return AuditApp(app_id or settings.jobs_group, **conf)


def faust_broker_settings(connection: KafkaConnection) -> dict[str, Any]:
    """faust's `broker` list and `broker_credentials` for `connection`: SSL → an
    `SSLCredentials` with the connection's TLS context; SASL_* → `SASLCredentials`
    (mechanism, username, password; the TLS context too for SASL_SSL, which is how faust
    tells SASL_SSL from SASL_PLAINTEXT); a configured client id → `broker_client_id`."""
    hosts = connection.bootstrap.split(",")
    settings: dict[str, Any] = {
        "broker": [f"kafka://{host.strip()}" for host in hosts if host.strip()]
    }
    context = connection.ssl_context()
    if connection.uses_sasl:
        assert connection.password is not None  # KafkaConnection's validator guarantees it
        settings["broker_credentials"] = faust.SASLCredentials(
            username=connection.username,
            password=connection.password.get_secret_value(),
            mechanism=connection.sasl_mechanism,
            ssl_context=context,
        )
    elif context is not None:
        settings["broker_credentials"] = faust.SSLCredentials(context)
    if connection.client_id:
        settings["broker_client_id"] = connection.client_id
    return settings


def source_topic(
    app: faust.App, name: str, *, batched: bool = False, **options: Any
) -> faust.TopicT:
    """A topic whose events are the raw message bytes (`RawSchema`).

    `batched`: each event is a whole poll's records of one partition (a `BatchMessage`:
    `event.value` is the list of `(offset, value bytes, timestamp ms)`), for agents that work
    per batch anyway. Needs an app from `make_app` (`AuditApp`: its consumer is the one that
    batches); its `stream_buffer_maxsize` then counts batches.
    """
    if batched:
        if not isinstance(app, AuditApp):  # a stock app's consumer would deliver per record
            raise TypeError(f"batched topic {name!r} needs an app from make_app")
        app.batched_topics = app.batched_topics | {name}
    return app.topic(name, schema=RawSchema(), **options)
