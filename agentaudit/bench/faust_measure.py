"""Read rates of faust agents, stage by stage, against a bare aiokafka consumer on the same data.

`measure_faust_stages(settings, n)` produces `n` events (the bench workload mix in the real
envelope) to a topic of its own with `settings.partitions` partitions, then reads all of
them with each of:

- `bare`: `aiokafka.AIOKafkaConsumer.getmany` with the options `agentaudit bench` uses,
  timed from the poll that brought the first records;
- `a_default`: a no-op `async for` agent on stock faust settings;
- `b_tuned`: the same agent on `stream_jobs.runtime.make_app`, reading `source_topic`
  (raw bytes); so do c–e;
- `c_take`: `stream.take(1000, within=0.25)` on raw bytes, `orjson.loads` per event and a
  few dict operations per event (the stream-jobs batching pattern);
- `d_table`: `c_take` plus a faust Table with changelog, updated once per key per batch;
- `e_parse`: `c_take` plus `agentaudit_schemas.events.parse_event` (pydantic) per event;
- `f_batched`: `c_take` on a batched source topic (`source_topic(batched=True)`: one faust
  event per partition and poll, which is how the stream jobs read);
- `g_batched_parse`: `f_batched` plus `parse_event` per event.

A rate counts from the first event an agent sees to the `n`-th (start-up is reported apart
as `ready_s`: `app.start()` until faust calls the worker ready). Stock faust start-up is
dominated by the 60 s session timeout (see `stream_jobs.runtime`); `a_default` gets the
same short one as the tuned app so the bench does not wait 30 s for it, which changes only
start-up. `measure_ready` times start-up itself (stock faust: ~31 s). Other processes on
the machine share its two cores: repeat, and read `cpu_us_per_event` next to the rates.
"""

from __future__ import annotations

import asyncio
import collections
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faust
import orjson
import uuid_utils
from aiokafka.admin import NewTopic

from agentaudit.bench.workload import payloads
from agentaudit.settings import Settings
from agentaudit_schemas.events import parse_event
from agentaudit_sdk import kafka_config
from stream_jobs.runtime import make_app, running, source_topic

STAGES = ("a_default", "b_tuned", "c_take", "d_table", "e_parse", "f_batched", "g_batched_parse")
BATCHED_STAGES = ("f_batched", "g_batched_parse")
TAKE_MAX, TAKE_WITHIN = 1000, 0.25
TAKE_POLLS = 16
"""Batched stages: polled batches per `take` (each holds up to `broker_max_poll_records`)."""
QUICK_START: dict[str, Any] = {"broker_session_timeout": 2.0, "broker_heartbeat_interval": 0.5}
"""Start-up only: the local broker answers the first join after half the session timeout."""


@dataclass(frozen=True)
class StageFigures:
    rate: float
    """Events per second from the first event seen to the last."""
    cpu: float
    """Process CPU time ÷ wall time over the same interval (1.0 = one core busy)."""
    ready_s: float
    """Seconds from `app.start()` to faust's "ready" (partitions assigned, tables recovered)."""

    @property
    def cpu_us_per_event(self) -> float:
        """Process CPU per event: steadier than `rate` when other processes share the cores."""
        return self.cpu / self.rate * 1e6


@dataclass(frozen=True)
class FaustStages:
    bare: float
    stages: dict[str, StageFigures]

    def ratios(self) -> dict[str, float]:
        """Each stage's rate ÷ the bare consumer's."""
        return {name: fig.rate / self.bare for name, fig in self.stages.items()}


def wire_events(n: int) -> list[tuple[bytes, bytes]]:
    """(key, value) pairs: the bench workload in the real envelope, keyed by tenant."""
    now = datetime.now(UTC).isoformat()
    out = []
    for tenant, kind, payload in payloads(n):
        doc = {
            "event_id": str(uuid_utils.uuid7()),
            "type": kind,
            "occurred_at": now,
            "sdk": {"name": "bench", "version": "0"},
            "tenant_id": tenant,
            "agent_id": "bench-agent",
            "agent_version": "1.0.0",
            "trace_id": "ab" * 16,
            "span_id": "cd" * 8,
            "payload": payload,
        }
        out.append((tenant.encode(), orjson.dumps(doc)))
    return out


async def produce(settings: Settings, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    """Create `topic` with `settings.partitions` partitions and write `messages` (acks=1, lz4)."""
    connection = settings.kafka_connection()
    admin = kafka_config.admin(connection)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, settings.partitions, 1)])
    finally:
        await admin.close()
    producer = kafka_config.producer(
        connection,
        acks=1,
        compression_type="lz4",
        max_batch_size=256 << 10,
        linger_ms=20,
        max_request_size=4 << 20,
    )
    await producer.start()
    try:
        for key, value in messages:
            await producer.send(topic, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


async def measure_bare(settings: Settings, topic: str, n: int) -> float:
    """Messages/s of a bare aiokafka group consumer (the measurement `agentaudit bench` makes)."""
    from agentaudit.bench.measure import measure_bare_consumer

    return await measure_bare_consumer(settings, n, topic)


class _Progress:
    """Counts events an agent handled; marks the first one and the `n`-th."""

    def __init__(self, n: int) -> None:
        self.n, self.seen, self.first = n, 0, 0.0
        self.first_cpu = 0.0
        self.done = asyncio.Event()

    def add(self, count: int) -> None:
        if not self.seen:
            self.first, self.first_cpu = time.perf_counter(), time.process_time()
        self.seen += count
        if self.seen >= self.n:
            self.done.set()


def _batch_work(values: list[bytes], decode: Callable[[bytes], Any]) -> dict[str, int]:
    """Per event: decode, read four fields, one dict update (the jobs' constant-time shape)."""
    totals: dict[str, int] = collections.defaultdict(int)
    for raw in values:
        doc = decode(raw)
        if isinstance(doc, dict):
            key, kind, payload = doc["tenant_id"], doc["type"], doc["payload"]
        else:  # a pydantic event
            key, kind, payload = doc.tenant_id, doc.type, doc.payload
        totals[key] += 1 if kind == "llm_call" or payload else 0
    return totals


def _stage_app(
    stage: str,
    settings: Settings,
    topic: str,
    progress: _Progress,
    data_dir: Path,
    overrides: dict[str, Any],
) -> faust.App:
    app_id = f"fm-{stage}-{uuid.uuid4().hex[:8]}"
    if stage == "a_default":
        app = faust.App(
            app_id,
            broker=f"kafka://{settings.kafka_bootstrap}",
            web_enabled=False,
            datadir=data_dir / app_id,
            **QUICK_START,
        )
    else:
        app = make_app(settings, app_id=app_id, **{**QUICK_START, **overrides})
    batched = stage in BATCHED_STAGES
    source = app.topic(topic) if stage == "a_default" else source_topic(app, topic, batched=batched)

    if stage in ("a_default", "b_tuned"):

        @app.agent(source)
        async def noop(stream: Any) -> None:
            async for _ in stream:
                progress.add(1)

        return app

    decode: Callable[[bytes], Any] = parse_event if stage.endswith("parse") else orjson.loads
    table = None
    if stage == "d_table":
        schema: faust.Schema = faust.Schema(
            key_type=str, key_serializer="raw", value_serializer="json"
        )
        table = app.Table("spend", default=int, schema=schema)

    @app.agent(source)
    async def batches(stream: Any) -> None:
        async for values in stream.take(TAKE_POLLS if batched else TAKE_MAX, within=TAKE_WITHIN):
            if batched:
                values = [item[1] for poll in values for item in poll]
            totals = _batch_work(values, decode)
            if table is not None:
                for key, count in totals.items():  # once per key per batch
                    table[key] += count
            progress.add(len(values))

    return app


async def measure_stage(
    stage: str, settings: Settings, topic: str, n: int, data_dir: Path, **overrides: Any
) -> StageFigures:
    """Run one stage's app until it has handled `n` events; `overrides` go to `make_app`."""
    progress = _Progress(n)
    app = _stage_app(stage, settings, topic, progress, data_dir, overrides)
    started = time.perf_counter()
    async with running(app, timeout=120):
        ready = time.perf_counter() - started
        await asyncio.wait_for(progress.done.wait(), 600)
        wall = time.perf_counter() - progress.first
        cpu = time.process_time() - progress.first_cpu
    return StageFigures(rate=progress.seen / wall, cpu=cpu / wall, ready_s=ready)


async def measure_faust_stages(
    settings: Settings, n: int, stages: tuple[str, ...] = STAGES
) -> FaustStages:
    """Produce `n` events to a fresh topic, then read them with the bare consumer and each stage."""
    topic = f"faust-bench-{uuid.uuid4().hex[:8]}"
    await produce(settings, topic, wire_events(n))
    bare = await measure_bare(settings, topic, n)
    figures: dict[str, StageFigures] = {}
    with tempfile.TemporaryDirectory(prefix="faust-measure-") as tmp:
        for stage in stages:
            figures[stage] = await measure_stage(stage, settings, topic, n, Path(tmp))
    return FaustStages(bare=bare, stages=figures)


async def measure_ready(settings: Settings, data_dir: Path, *, stock: bool) -> float:
    """Seconds from `app.start()` to ready for an app with one agent and one table.

    `stock=True`: faust's defaults (only the web server off); else `make_app` as shipped
    (6 s session). Stock start-up takes ~31 s on the local broker: not part of the stages.
    """
    app_id = f"fm-ready-{uuid.uuid4().hex[:8]}"
    if stock:
        app = faust.App(
            app_id,
            broker=f"kafka://{settings.kafka_bootstrap}",
            web_enabled=False,
            datadir=data_dir / app_id,
        )
    else:
        app = make_app(settings, app_id=app_id)
    app.Table("ready", default=int)

    @app.agent(app.topic(f"{app_id}-in"))
    async def idle(stream: Any) -> None:
        async for _ in stream:
            pass

    started = time.perf_counter()
    async with running(app, timeout=180):
        return time.perf_counter() - started
