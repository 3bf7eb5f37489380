"""Stream jobs (spend + budgets) against the real broker, killed and shared (issue #3).

Each test runs `agentaudit jobs` as child processes (faust workers) over a few thousand
`llm_call` events of six tenants, one tenant per partition, with daily budgets whose
thresholds the traffic crosses part-way, and compares what the workers leave behind with
one uninterrupted in-process run of the pure `StreamJobs` over the same events:

- alerts and control messages: the stored rows (alerts/control topics → `RecordSink` →
  chDB) hold one row per record id, and the ids are exactly the expected ones;
- spend: the latest value per tenant on the `<app_id>-spend-changelog` topic (what a
  restarted worker recovers from) holds, per window, dimension and key, exactly the sum of
  the events' costs priced with `schemas.pricing` and exactly their count, i.e. nothing
  lost and nothing counted twice.

The topics themselves may legitimately carry a record twice after a kill: a batch's records
are published before its state is written, so a worker killed in between replays the batch
after the restart and re-publishes the same ids. The record sink keeps one row per id; the
tests print how many such re-publications they saw.

Each test has its own faust app id (consumer group and changelog topics), topics and store.
The child is started through `_RUNNER`, which runs the real CLI (`agentaudit jobs`) with two
test-only additions: the app id from `AGENTAUDIT_JOBS_APP_ID` (Settings has no such field
yet, and the hard-coded id would share one group and one set of changelog topics between
all tests on the session's broker) and one `ASSIGNED <partitions>` line per rebalance.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import murmur2

from agentaudit.broker import ensure_topics
from agentaudit.control_plane import publish_budgets
from agentaudit.records.sink import RecordSink
from agentaudit.settings import Settings
from agentaudit.sink.faults import CRASH_EXIT_CODE
from agentaudit.store import open_store
from agentaudit.store.migrations import migrate
from schemas.budgets import Budget, BudgetScope, WindowKind
from schemas.events import parse_event
from schemas.pricing import load_pricing
from schemas.records import Alert, BreakerTransition, ControlMessage
from stream_jobs.processor import Record, StreamJobs
from stream_jobs.spend.readout import applied_position, spend_cells
from stream_jobs.spend.windows import Calendar, window_at
from tests.conftest import settings_env
from tests.factories import event_dict, wire

pytestmark = pytest.mark.integration

PARTITIONS = 6
PER_TENANT = 500
SEED = 20261121
MODELS = ("gpt-5-mini", "gpt-5-nano", "gpt-5")
USERS = ("u-1", "u-2", "u-3")
AGENTS = ("support-bot", "billing-bot")
FAST_GROUP = {"session_timeout_ms": 2000, "heartbeat_interval_ms": 500}
APP_ID_ENV = "AGENTAUDIT_JOBS_APP_ID"
_RUNNER = """
import os, sys
import stream_jobs.app as jobs_app

_init = jobs_app.StreamJobsApp.__init__

def _init_for_tests(self, settings, **options):
    options.setdefault("app_id", os.environ["AGENTAUDIT_JOBS_APP_ID"])
    _init(self, settings, **options)

    async def show(_app, assigned, **_kw):
        parts = sorted(tp.partition for tp in assigned if tp.topic == settings.events_topic)
        print("ASSIGNED", *parts, flush=True)

    self.app.on_partitions_assigned.connect(show)

jobs_app.StreamJobsApp.__init__ = _init_for_tests

if os.environ.get("AGENTAUDIT_TEST_JOBS_CRASH") == "after_publish":
    _publish = jobs_app.StreamJobsApp._publish

    async def _publish_then_die(self, records):
        await _publish(self, records)
        if records:  # acknowledged by the broker; the batch's state is not written yet
            os._exit(int(os.environ["AGENTAUDIT_TEST_CRASH_CODE"]))

    jobs_app.StreamJobsApp._publish = _publish_then_die
from agentaudit.cli.main import main
sys.argv = ["agentaudit", "jobs"]
main()
"""

Message = tuple[bytes, bytes]  # (key, value)
Placed = tuple[int, int, bytes]  # (partition, offset, value) as the broker stored it
CellKey = tuple[str, str, str]  # (window label, dimension, key)


def _tenants() -> list[str]:
    """One tenant per partition (the producer's murmur2 partitioner), so work splits."""
    found: dict[int, str] = {}
    for i in range(1000):
        name = f"tenant-{i}"
        found.setdefault((murmur2(name.encode()) & 0x7FFFFFFF) % PARTITIONS, name)
        if len(found) == PARTITIONS:
            return [found[p] for p in range(PARTITIONS)]
    raise AssertionError("no tenant names cover every partition")


TENANTS = _tenants()


@dataclass
class Workload:
    budgets: list[Budget]
    halves: tuple[list[Message], list[Message]]


def _workload(now: datetime) -> Workload:
    """Events in time order over the last ~2 minutes; budgets set so that each tenant
    crosses 50 % in the first half and 80 % and 100 % in the second."""
    rng = random.Random(SEED)
    pricing = load_pricing()
    start = now - timedelta(minutes=2)
    step = timedelta(seconds=100) / (PER_TENANT * len(TENANTS))
    messages: list[Message] = []
    spent: dict[str, Decimal] = defaultdict(Decimal)
    user_spent: dict[str, Decimal] = defaultdict(Decimal)
    for i in range(PER_TENANT * len(TENANTS)):
        tenant = TENANTS[i % len(TENANTS)]
        doc = event_dict(kind="llm_call", tenant=tenant)
        doc["occurred_at"] = (start + i * step).isoformat()
        doc["agent_id"] = rng.choice(AGENTS)
        doc["user_id"] = rng.choice(USERS)
        doc["payload"]["request_model"] = rng.choice(MODELS)
        doc["payload"]["usage"] = {"input_tokens": rng.randint(200, 2000),
                                   "output_tokens": rng.randint(50, 600),
                                   "cached_input_tokens": rng.randint(0, 150)}  # fmt: skip
        cost = _cost(doc, pricing)
        spent[tenant] += cost
        if tenant == TENANTS[1]:
            user_spent[doc["user_id"]] += cost
        messages.append((tenant.encode(), wire(doc)))
    budgets = [
        Budget(name=f"{t}-daily", scope=BudgetScope.TENANT, tenant_id=t, window=WindowKind.DAY,
               limit_usd=round(float(spent[t]) / 1.1, 4), hard_limit=(t == TENANTS[0]))
        for t in TENANTS
    ]  # fmt: skip
    budgets.append(Budget(name="users-daily", scope=BudgetScope.USER, tenant_id=TENANTS[1],
                          user_id="*", window=WindowKind.DAY, hard_limit=False,
                          limit_usd=round(float(max(user_spent.values())) / 0.9, 4)))  # fmt: skip
    half = len(messages) // 2
    return Workload(budgets, (messages[:half], messages[half:]))


def _cost(doc: dict[str, Any], pricing: Any) -> Decimal:
    p = doc["payload"]
    event = parse_event(wire(doc))
    usd: Decimal = pricing.cost(p["provider"], p["request_model"], event.payload.usage).usd  # type: ignore[attr-defined]
    return usd


def _expected_cells(placed: list[Placed]) -> dict[str, dict[CellKey, tuple[Decimal, int]]]:
    """Tenant → (window label, dimension, key) → (USD, calls), summed from the events."""
    pricing = load_pricing()
    out: dict[str, dict[CellKey, tuple[Decimal, int]]] = defaultdict(dict)
    for _p, _o, value in placed:
        doc = orjson.loads(value)
        usd = _cost(doc, pricing)
        at = datetime.fromisoformat(doc["occurred_at"])
        keys = [("tenant", doc["tenant_id"]), ("user", doc["user_id"]),
                ("agent", doc["agent_id"]), ("model", doc["payload"]["request_model"])]  # fmt: skip
        cells = out[doc["tenant_id"]]
        for kind in WindowKind:
            label = window_at(at, Calendar(kind)).label
            for dim, key in keys:
                old = cells.get((label, dim, key), (Decimal(0), 0))
                cells[(label, dim, key)] = (old[0] + usd, old[1] + 1)
    return out


def _expected_records(budgets: list[Budget], placed: list[Placed]) -> list[Record]:
    """What one uninterrupted run publishes: the pure jobs over each partition in order."""
    jobs = StreamJobs(load_pricing(), budgets)
    now = datetime.now(UTC)
    out: list[Record] = []
    for partition in range(PARTITIONS):
        items = [(o, v) for p, o, v in placed if p == partition]
        out += jobs.process(partition, iter(items), now)
    assert not [r for r in out if isinstance(r, BreakerTransition)], "traffic meant to keep breakers closed"
    return out


def _id(record: Record) -> str:
    if isinstance(record, Alert):
        return record.alert_id
    if isinstance(record, ControlMessage):
        return record.control_id
    raise AssertionError(f"unexpected record {record!r}")


# -- broker I/O ------------------------------------------------------------------------------


async def _produce(settings: Settings, messages: list[Message]) -> list[Placed]:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(settings.events_topic, v, key=k) for k, v in messages]
        metadata = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return [(m.partition, m.offset, v) for m, (_k, v) in zip(metadata, messages, strict=True)]


async def _read(settings: Settings, topic: str) -> list[Any]:
    """Every record of `topic`, from the beginning to the high watermark of each partition."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None,
                                enable_auto_commit=False, fetch_max_wait_ms=50)  # fmt: skip
    await consumer.start()
    out: list[Any] = []
    try:
        await consumer.topics()
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not tps:
            return out
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        async with asyncio.timeout(15):
            while True:
                for records in (await consumer.getmany(timeout_ms=50)).values():
                    out += records
                if await _at_end(consumer, tps):
                    return out
    finally:
        await consumer.stop()


async def _at_end(consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> bool:
    """The high watermark from the last fetch, not ListOffsets (the local broker under-reports
    end offsets of batched produce, see `agentaudit.control_plane`)."""
    for tp in tps:
        end = consumer.highwater(tp)
        if end is None or await consumer.position(tp) < end:
            return False
    return True


async def _spend_states(settings: Settings, app_id: str) -> dict[str, dict[str, Any]]:
    """Tenant → latest `spend` table value, from the table's changelog topic."""
    latest: dict[str, dict[str, Any] | None] = {}
    for m in await _read(settings, f"{app_id}-spend-changelog"):
        latest[orjson.loads(m.key)] = None if m.value is None else orjson.loads(m.value)
    return {k: v for k, v in latest.items() if v is not None and not k.startswith("partition:")}


async def _published_ids(settings: Settings) -> Counter[str]:
    """Record id → how many times it is on the alerts and control topics."""
    ids: Counter[str] = Counter()
    for topic in (settings.alerts_topic, settings.control_topic):
        for m in await _read(settings, topic):
            doc = orjson.loads(m.value)
            ids[doc.get("alert_id") or doc.get("control_id") or doc.get("transition_id")] += 1
    return ids


def _last_positions(placed: list[Placed]) -> dict[str, tuple[int, int]]:
    last: dict[str, tuple[int, int]] = {}
    for p, o, value in placed:
        last[orjson.loads(value)["tenant_id"]] = (p, o)
    return last


# -- the workers -----------------------------------------------------------------------------


class JobsProcess:
    """One `agentaudit jobs` child; its output goes to a file (read for ASSIGNED lines).
    `crash="after_publish"` makes it exit (like kill -9) right after the first records it
    publishes are acknowledged, before the state of that batch is written."""

    def __init__(self, settings: Settings, app_id: str, log: Path, crash: str | None = None) -> None:
        env = {**settings_env(settings), APP_ID_ENV: app_id}
        if crash:
            env |= {"AGENTAUDIT_TEST_JOBS_CRASH": crash, "AGENTAUDIT_TEST_CRASH_CODE": str(CRASH_EXIT_CODE)}
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-c", _RUNNER], env=env, stdout=out,
                                         stderr=subprocess.STDOUT)  # fmt: skip

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def assignments(self) -> list[list[int]]:
        return [[int(p) for p in line.split()[1:]] for line in self.output().splitlines()
                if line.startswith("ASSIGNED")]  # fmt: skip

    def alive(self) -> None:
        assert self.proc.poll() is None, f"jobs worker exited {self.proc.returncode}:\n{self.output()}"

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(30) == 0, self.output()


async def _until(what: str, check: Callable[[], Awaitable[bool]], workers: list[JobsProcess],
                 timeout: float = 45) -> None:  # fmt: skip
    """Poll another process's progress (nothing to await across processes)."""
    deadline = time.monotonic() + timeout
    while not await check():
        for w in workers:
            w.alive()
        if time.monotonic() > deadline:
            status = getattr(check, "status", "")
            logs = "\n".join(w.output()[-3000:] for w in workers)
            raise AssertionError(f"timed out waiting for {what}: {status}\n{logs}")
        await asyncio.sleep(0.2)


class _Done:
    """Every expected record is published and every tenant's state includes its last event;
    `status` says what is still missing (for the failure message)."""

    def __init__(self, settings: Settings, app_id: str, records: list[Record],
                 last: dict[str, tuple[int, int]]) -> None:  # fmt: skip
        self.settings, self.app_id, self.last = settings, app_id, last
        self.records = {_id(r): r for r in records}
        self.status = "not checked yet"

    async def __call__(self) -> bool:
        missing = sorted(map(_describe, (self.records[i] for i in
                                         set(self.records) - set(await _published_ids(self.settings)))))  # fmt: skip
        states = await _spend_states(self.settings, self.app_id)
        behind = {t: (applied_position(states[t]) if t in states else None, pos)
                  for t, pos in self.last.items()
                  if t not in states or applied_position(states[t]) != pos}  # fmt: skip
        self.status = f"records not published: {missing}; (state, last event) behind: {behind}"
        return not missing and not behind


def _describe(r: Record) -> str:
    if isinstance(r, Alert):
        return f"{r.kind} {r.scope.key} {r.window} {r.details.get('threshold')}"
    return f"{type(r).__name__} {r.scope.key}"


# -- the checks ------------------------------------------------------------------------------


def _check_spend(states: dict[str, dict[str, Any]], placed: list[Placed]) -> None:
    expected = _expected_cells(placed)
    assert sorted(states) == sorted(expected)
    for tenant, cells in expected.items():
        got = {(c.window, c.dimension, c.key): (c.cost_usd, c.calls) for c in spend_cells(states[tenant])}
        assert got == cells, f"{tenant}: spend differs from the events' sum"


async def _check_store(settings: Settings, expected: list[Record]) -> dict[str, int]:
    """Run the record sink over both topics into a fresh store; one row per expected id."""
    published = await _published_ids(settings)
    with open_store(settings, own=True) as store:
        migrate(store)
        flushed = asyncio.Event()
        sink = RecordSink(settings, store, on_flush=lambda _b: flushed.set(), consumer_options=FAST_GROUP)
        task = asyncio.create_task(sink.run())
        try:
            async with asyncio.timeout(30):
                while sink.processor.counters.handled < sum(published.values()):
                    if task.done():
                        task.result()
                    flushed.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(flushed.wait(), 0.5)
        finally:
            sink.stop()
            await task
        alerts = store.query("SELECT alert_id, kind, scope_key, window, details FROM agentaudit.alerts").result_rows
        controls = store.query("SELECT control_id, scope_key, action FROM agentaudit.control").result_rows
    want_alerts = [r for r in expected if isinstance(r, Alert)]
    want_controls = [r for r in expected if isinstance(r, ControlMessage)]
    assert len({r[0] for r in alerts}) == len(alerts), "an alert id stored twice"
    assert len({r[0] for r in controls}) == len(controls), "a control id stored twice"
    what = {(k, s, w, orjson.loads(d).get("threshold")) for _id, k, s, w, d in alerts}
    assert what == {(a.kind, a.scope.key, a.window, a.details.get("threshold")) for a in want_alerts}
    assert {r[0] for r in alerts} == {a.alert_id for a in want_alerts}
    assert sorted(controls) == sorted((c.control_id, c.scope.key, c.action.value) for c in want_controls)
    return {i: n for i, n in published.items() if n > 1}


def _six(settings: Settings) -> Settings:
    return settings.model_copy(update={"partitions": PARTITIONS})


# -- the tests -------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["sigkill_at_first_alert", "crash_after_publish"])
async def test_jobs_killed_and_restarted_lose_no_spend_and_store_each_alert_once(
    settings: Settings, tmp_path: Path, fault: str
) -> None:
    """The worker dies part-way through the first half, the second half is produced while it
    is down, a new worker takes over; nothing it applied was committed yet (faust commits
    every 2.8 s), so the new worker replays the partitions, skips what the recovered state
    holds and applies the rest exactly once.

    - `sigkill_at_first_alert`: SIGKILL the moment the first record reaches the alerts topic
      (a live consumer sees it within milliseconds; by then the worker has usually written
      that batch's state too, and is a few batches further).
    - `crash_after_publish`: the worker exits by itself right after its first records are
      acknowledged and before that batch's state is written: the replay re-publishes the
      same ids, which the topic then carries twice and the store keeps once.
    """
    settings, app_id = _six(settings), f"jobs-{uuid.uuid4().hex[:10]}"
    load = _workload(datetime.now(UTC))
    await ensure_topics(settings)
    await publish_budgets(settings, load.budgets)
    first = await _produce(settings, load.halves[0])
    assert any(isinstance(r, Alert) for r in _expected_records(load.budgets, first))

    crash = "after_publish" if fault == "crash_after_publish" else None
    worker = JobsProcess(settings, app_id, tmp_path / "jobs-1.log", crash=crash)
    try:
        if crash:
            assert worker.proc.wait(45) == CRASH_EXIT_CODE, worker.output()
        else:
            await _first_record(settings, settings.alerts_topic, worker)
    finally:
        worker.kill()
    at_kill = await _spend_states(settings, app_id)
    applied = sum(1 for p, o, v in first if _covers(at_kill, orjson.loads(v)["tenant_id"], p, o))
    if crash:  # deterministic: the batch that published is not in the state
        assert applied < len(first), "the worker was meant to die part-way through the first half"

    second = await _produce(settings, load.halves[1])
    placed = first + second
    want = _expected_records(load.budgets, placed)
    restarted = JobsProcess(settings, app_id, tmp_path / "jobs-2.log")
    try:
        await _until("all records and spend", _Done(settings, app_id, want, _last_positions(placed)),
                     [restarted])  # fmt: skip
    finally:
        restarted.stop()

    _check_spend(await _spend_states(settings, app_id), placed)
    republished = await _check_store(settings, want)
    if crash:
        assert republished, "the replayed batch re-publishes its records under the same ids"
    print(f"\n{fault}: {applied}/{len(first)} first-half events in the persisted state at the "
          f"kill; {len(want)} records expected, {len(republished)} ids published more than once")


async def _first_record(settings: Settings, topic: str, worker: JobsProcess, timeout: float = 45) -> None:
    """Return as soon as `topic` holds a record (a live consumer: no polling delay)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None,
                                enable_auto_commit=False, fetch_max_wait_ms=20)  # fmt: skip
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(settings.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout
        while not await consumer.getmany(timeout_ms=100):
            worker.alive()
            assert time.monotonic() < deadline, f"no record on {topic} within {timeout}s"
    finally:
        await consumer.stop()


def _covers(states: dict[str, dict[str, Any]], tenant: str, partition: int, offset: int) -> bool:
    pos = applied_position(states[tenant]) if tenant in states else None
    return pos is not None and pos[0] == partition and pos[1] >= offset


async def test_two_workers_share_the_partitions_and_agree_with_one(
    settings: Settings, tmp_path: Path
) -> None:
    """Worker A takes the first half alone; B joins (a rebalance hands A's partitions over
    through the changelog); the second half is split between them."""
    settings, app_id = _six(settings), f"jobs-{uuid.uuid4().hex[:10]}"
    load = _workload(datetime.now(UTC))
    await ensure_topics(settings)
    await publish_budgets(settings, load.budgets)
    a = JobsProcess(settings, app_id, tmp_path / "jobs-a.log")
    b: JobsProcess | None = None
    try:
        first = await _produce(settings, load.halves[0])
        await _until("A's first half", _Done(settings, app_id, _expected_records(load.budgets, first),
                                              _last_positions(first)), [a])  # fmt: skip
        b = JobsProcess(settings, app_id, tmp_path / "jobs-b.log")

        async def split() -> bool:
            assert b is not None
            got_a, got_b = a.assignments(), b.assignments()
            return bool(got_b and got_b[-1] and got_a and got_a[-1]
                        and sorted(got_a[-1] + got_b[-1]) == list(range(PARTITIONS)))

        await _until("both workers assigned", split, [a, b])
        second = await _produce(settings, load.halves[1])
        placed = first + second
        want = _expected_records(load.budgets, placed)
        await _until("all records and spend", _Done(settings, app_id, want, _last_positions(placed)),
                     [a, b])  # fmt: skip
        assignment = (a.assignments()[-1], b.assignments()[-1])
    finally:
        for w in (a, b):
            if w is not None:
                w.stop()

    assert assignment[0] and assignment[1], assignment
    _check_spend(await _spend_states(settings, app_id), placed)
    republished = await _check_store(settings, want)
    print(f"\nA owned partitions {assignment[0]}, B {assignment[1]}; "
          f"{len(republished)} ids published more than once")
