"""Stream jobs (spend + budgets) killed, restarted and shared, on the real broker (issue #3).

`agentaudit jobs` children (faust workers) take 3000 `llm_call` events of six tenants, one per
partition, with daily budgets crossed part-way (50 % in the first half, 80 % and 100 % in the
second; one hard limit, one per-user budget). The outcome must equal one uninterrupted
in-process run of the pure `StreamJobs`: the record sink (alerts + control topics → chDB)
stores one row per record id, exactly the expected ids; the latest state per tenant on
`<app_id>-spend-changelog` (what a worker recovers from) holds exactly the events' cost sum
(priced with `agentaudit_schemas.pricing`) and count per window, dimension and key; and no tenant's
state on the changelog ever goes back to an older source position.

A topic may legitimately carry a record twice: records are published before the batch's
state is written, so a worker dying in between re-publishes the same ids after its replay;
the store keeps one. The tests print how many ids the topics carried more than once.

Each test has its own faust app id (group, changelogs), topics and store. `_RUNNER` runs the
real CLI (`agentaudit jobs`) plus test-only hooks: the app id from `AGENTAUDIT_JOBS_APP_ID`
(no such setting yet; the hard-coded id would make all tests on the session's broker share a
group and changelogs), an `ASSIGNED <partitions>` line per rebalance, an optional crash.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
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
from agentaudit.settings import Settings
from agentaudit.sink.faults import CRASH_EXIT_CODE
from agentaudit.sink.pipeline_records.sink import RecordSink
from agentaudit.store import open_store
from agentaudit.store.migrations import migrate
from agentaudit_schemas.budgets import Budget, BudgetScope, WindowKind
from agentaudit_schemas.events import parse_event
from agentaudit_schemas.pricing import PricingTable, load_pricing
from agentaudit_schemas.records import Alert, BreakerTransition, ControlMessage
from stream_jobs.jobs import Record, StreamJobs
from stream_jobs.spend.readout import applied_position, spend_cells
from stream_jobs.spend.windows import Calendar, window_at
from tests.conftest import settings_env
from tests.factories import event_dict, wire
from tests.helpers_wait import poll_until

pytestmark = pytest.mark.integration

PARTITIONS = 6
PER_TENANT = 500
SEED = 20261121
MODELS = ("gpt-5-mini", "gpt-5-nano", "gpt-5")
USERS = ("u-1", "u-2", "u-3")
AGENTS = ("support-bot", "billing-bot")
FAST_GROUP = {"session_timeout_ms": 2000, "heartbeat_interval_ms": 500}
_RUNNER = """
import os, sys
from datetime import UTC, datetime, timedelta
import stream_jobs.app as jobs_app
import stream_jobs.runtime as runtime
_init, _publish = jobs_app.StreamJobsApp.__init__, jobs_app.StreamJobsApp._publish
_wait_next_records = runtime.FastConsumer._wait_next_records
_shift = timedelta(seconds=float(os.environ["AGENTAUDIT_TEST_CLOCK_SHIFT_S"]))
_skip = {"topic": None, "assignments": 0, "done": False}

def _init_for_tests(self, settings, **options):
    options.setdefault("app_id", os.environ["AGENTAUDIT_JOBS_APP_ID"])
    options.setdefault("clock", lambda: datetime.now(UTC) + _shift)
    _init(self, settings, **options)
    _skip["topic"] = settings.events_topic
    async def show(_app, assigned, **_kw):
        parts = sorted(tp.partition for tp in assigned if tp.topic == settings.events_topic)
        print("ASSIGNED", *parts, flush=True)
        _skip["assignments"] += 1
    self.app.on_partitions_assigned.connect(show)

async def _skip_ahead(self, timeout):  # once, after the first rebalance
    records, active = await _wait_next_records(self, timeout)
    armed = _skip["assignments"] > 1 and not _skip["done"]
    for tp, found in (records or {}).items() if armed else ():
        if tp.topic == _skip["topic"] and len(found) > 1:
            # taken from aiokafka (its position is past them), all but the last dropped
            records[tp], _skip["done"] = found[-1:], True
            print("SKIPPED", tp.partition, found[0].offset, found[-2].offset, flush=True)
            break
    return records, active

async def _publish_then_die(self, records):
    await _publish(self, records)
    if records:  # acknowledged by the broker; the batch's state is not written yet
        os._exit(int(os.environ["AGENTAUDIT_TEST_CRASH_CODE"]))

jobs_app.StreamJobsApp.__init__ = _init_for_tests
if os.environ.get("AGENTAUDIT_TEST_JOBS_CRASH") == "after_publish":
    jobs_app.StreamJobsApp._publish = _publish_then_die
if os.environ.get("AGENTAUDIT_TEST_JOBS_FAULT") == "skip_ahead_after_rebalance":
    runtime.FastConsumer._wait_next_records = _skip_ahead
from agentaudit.cli.main import main
sys.argv = ["agentaudit", "jobs"]
main()
"""

Message = tuple[bytes, bytes]  # (key, value)
Placed = tuple[int, int, bytes]  # (partition, offset, value) as the broker stored it
Position = tuple[int, int]  # (partition, offset)
Cells = dict[tuple[str, str, str], tuple[Decimal, int]]  # (window, dim, key) → (USD, calls)


def _tenants() -> list[str]:
    """One tenant per partition (the producer's murmur2 partitioner), so the work splits."""
    found: dict[int, str] = {}
    for i in range(1000):
        found.setdefault((murmur2(f"tenant-{i}".encode()) & 0x7FFFFFFF) % PARTITIONS, f"tenant-{i}")
    assert len(found) == PARTITIONS
    return [found[p] for p in range(PARTITIONS)]


TENANTS = _tenants()
_AT = datetime.now(UTC)
_NOON = _AT.replace(hour=12, minute=0, second=0, microsecond=0)
CLOCK_SHIFT = (_NOON if _NOON <= _AT else _NOON - timedelta(days=1)) - _AT
"""The workers' clock (and the expectations') is shifted back to the last noon UTC, so neither
the events' two minutes nor the run straddle midnight: the daily budgets' windows are the same
in every run (near midnight, thresholds fall in two windows, or a window ends before it is
raised). Never forward: the jobs judge events with the sink's verdict, which refuses an event
dated ahead of its record's (real) timestamp, so a forward shift dropped every event between
midnight and noon."""


def _now() -> datetime:
    return datetime.now(UTC) + CLOCK_SHIFT


def _workload(now: datetime) -> tuple[list[Budget], list[Message], list[Message]]:
    """Budgets and the two halves of the events (time order over the last ~2 minutes): each
    tenant's daily budget is crossed 50 % in the first half, 80 % and 100 % in the second."""
    rng, pricing = random.Random(SEED), load_pricing()
    start, step = now - timedelta(minutes=2), timedelta(seconds=100) / (PER_TENANT * PARTITIONS)
    messages: list[Message] = []
    spent: dict[str, Decimal] = defaultdict(Decimal)
    user_spent: dict[str, Decimal] = defaultdict(Decimal)
    for i in range(PER_TENANT * PARTITIONS):
        tenant = TENANTS[i % PARTITIONS]
        doc = event_dict(kind="llm_call", tenant=tenant)
        doc |= {
            "occurred_at": (start + i * step).isoformat(),
            "agent_id": rng.choice(AGENTS),
            "user_id": rng.choice(USERS),
        }
        doc["payload"]["request_model"] = rng.choice(MODELS)
        doc["payload"]["usage"] = {
            "input_tokens": rng.randint(200, 2000),
            "output_tokens": rng.randint(50, 600),
            "cached_input_tokens": rng.randint(0, 150),
        }
        cost = _cost(doc, pricing)
        spent[tenant] += cost
        user_spent[doc["user_id"]] += cost if tenant == TENANTS[1] else 0
        messages.append((tenant.encode(), wire(doc)))
    budgets = [
        Budget(
            name=f"{t}-daily",
            scope=BudgetScope.TENANT,
            tenant_id=t,
            hard_limit=i == 0,
            window=WindowKind.DAY,
            limit_usd=round(float(spent[t]) / 1.1, 4),
        )
        for i, t in enumerate(TENANTS)
    ]
    budgets.append(
        Budget(
            name="users-daily",
            scope=BudgetScope.USER,
            tenant_id=TENANTS[1],
            user_id="*",
            window=WindowKind.DAY,
            hard_limit=False,
            limit_usd=round(float(max(user_spent.values())) / 0.9, 4),
        )
    )
    half = len(messages) // 2
    return budgets, messages[:half], messages[half:]


def _cost(doc: dict[str, Any], pricing: PricingTable) -> Decimal:
    """The pricing table's cost of one event document (not the jobs' own cost code)."""
    usage = parse_event(wire(doc)).payload.usage  # type: ignore[attr-defined]
    return pricing.cost(doc["payload"]["provider"], doc["payload"]["request_model"], usage).usd


def _expected_cells(placed: list[Placed]) -> dict[str, Cells]:
    """Tenant → (window label, dimension, key) → (USD, calls), summed from the events."""
    pricing = load_pricing()
    out: dict[str, Cells] = defaultdict(dict)
    for _p, _o, value in placed:
        doc = orjson.loads(value)
        usd, at = _cost(doc, pricing), datetime.fromisoformat(doc["occurred_at"])
        keys = [
            ("tenant", doc["tenant_id"]),
            ("user", doc["user_id"]),
            ("agent", doc["agent_id"]),
            ("model", doc["payload"]["request_model"]),
        ]
        cells = out[doc["tenant_id"]]
        for label in (window_at(at, Calendar(kind)).label for kind in WindowKind):
            for dim, key in keys:
                total, calls = cells.get((label, dim, key), (Decimal(0), 0))
                cells[(label, dim, key)] = (total + usd, calls + 1)
    return out


def _expected_records(
    budgets: list[Budget], placed: list[Placed], changes: Sequence[Budget] = ()
) -> list[Record]:
    """What one uninterrupted run publishes: the pure jobs over each partition in offset
    order, then the budget `changes`."""
    jobs, now = StreamJobs(load_pricing(), budgets), _now()
    out: list[Record] = []
    for partition in range(PARTITIONS):
        out += jobs.process(partition, ((o, v) for p, o, v in placed if p == partition), now)
    for budget in changes:
        out += jobs.set_budget(budget, now)
    assert not any(isinstance(r, BreakerTransition) for r in out), "breakers meant to stay closed"
    return out


def _id(record: Record) -> str:
    assert isinstance(record, Alert | ControlMessage), record
    return record.alert_id if isinstance(record, Alert) else record.control_id


def _describe(r: Record) -> str:
    what = f"{r.kind} {r.window} {r.details.get('threshold')}" if isinstance(r, Alert) else r.record
    return f"{what} {r.scope.key}"  # type: ignore[union-attr]


def _last_positions(placed: list[Placed]) -> dict[str, Position]:
    return {orjson.loads(value)["tenant_id"]: (p, o) for p, o, value in placed}


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
    """Every record of `topic`, from the beginning to each partition's high watermark (from
    the last fetch: the local broker under-reports ListOffsets, see `control_plane`)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=20,
    )
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
                if all(
                    [
                        (hw := consumer.highwater(tp)) is not None
                        and await consumer.position(tp) >= hw
                        for tp in tps
                    ]
                ):
                    return out
    finally:
        await consumer.stop()


async def _spend_states(settings: Settings, app_id: str) -> dict[str, dict[str, Any]]:
    """Tenant → latest value of table `spend`, from its changelog (faust's name for it)."""
    latest: dict[str, dict[str, Any] | None] = {}
    for m in await _read(settings, f"{app_id}-spend-changelog"):
        latest[orjson.loads(m.key)] = None if m.value is None else orjson.loads(m.value)
    return {k: v for k, v in latest.items() if v is not None and not k.startswith("partition:")}


async def _published_ids(settings: Settings) -> Counter[str]:
    """Record id → how many times the alerts and control topics carry it."""
    ids: Counter[str] = Counter()
    for topic in (settings.alerts_topic, settings.control_topic):
        for m in await _read(settings, topic):
            doc = orjson.loads(m.value)
            if doc.get("record") == "heartbeat":
                continue  # the jobs' liveness, not a record of theirs (a new id every beat)
            ids[doc.get("alert_id") or doc.get("control_id") or doc.get("transition_id")] += 1
    return ids


class JobsProcess:
    """One `agentaudit jobs` child (clock at `_now()`); its output goes to a file (read for
    ASSIGNED lines). `crash="after_publish"` makes it exit (as kill -9 would leave it) right
    after the first records it publishes are acknowledged, before that batch's state is
    written. `fault="skip_ahead_after_rebalance"`: after its first rebalance, its consumer
    takes one poll's records of a partition and delivers only the last one (what faust's
    consumer did when it dropped a poll mid-rebalance and its seek back failed)."""

    def __init__(
        self,
        settings: Settings,
        app_id: str,
        log: Path,
        crash: str | None = None,
        fault: str | None = None,
    ):
        env = {
            **settings_env(settings),
            "AGENTAUDIT_JOBS_APP_ID": app_id,
            "AGENTAUDIT_TEST_CLOCK_SHIFT_S": str(CLOCK_SHIFT.total_seconds()),
        }
        if crash:
            env |= {
                "AGENTAUDIT_TEST_JOBS_CRASH": crash,
                "AGENTAUDIT_TEST_CRASH_CODE": str(CRASH_EXIT_CODE),
            }
        if fault:
            env["AGENTAUDIT_TEST_JOBS_FAULT"] = fault
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _RUNNER], env=env, stdout=out, stderr=subprocess.STDOUT
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def assignments(self) -> list[list[int]]:
        return [
            [int(p) for p in line.split()[1:]]
            for line in self.output().splitlines()
            if line.startswith("ASSIGNED")
        ]

    def alive(self) -> None:
        assert self.proc.poll() is None, f"worker exited {self.proc.returncode}:\n{self.output()}"

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()  # never leave a worker behind a failed test
            raise AssertionError(
                f"did not stop within 30 s after SIGTERM:\n{self.output()}"
            ) from None
        assert code == 0, self.output()


async def _until(
    what: str, check: Callable[[], Awaitable[bool]], workers: list[JobsProcess]
) -> None:
    """Poll other processes' progress (nothing to await across processes); on timeout, say
    what is missing (`check.status`, if any) and show the workers' output."""

    def detail() -> str:
        logs = "\n".join(w.output()[-3000:] for w in workers)
        return f"{getattr(check, 'status', '')}\n{logs}"

    await poll_until(
        check, 45, what, interval=0.2, detail=detail, check=lambda: [w.alive() for w in workers]
    )


class _Done:
    """Every expected record is published and every tenant's state includes its last event;
    with `raised` budget names, also every tenant's state has evaluated its raised budget (at
    twice the limit, a tenant's 1.1x spend is past the 50 % threshold only)."""

    def __init__(
        self,
        settings: Settings,
        app_id: str,
        records: list[Record],
        last: dict[str, Position],
        raised: Sequence[Budget] = (),
    ) -> None:
        self.settings, self.app_id, self.last = settings, app_id, last
        self.records = {_id(r): r for r in records}
        self.raised = {b.name for b in raised}
        self.status = "not checked yet"

    async def __call__(self) -> bool:
        unpublished = set(self.records) - set(await _published_ids(self.settings))
        states = await _spend_states(self.settings, self.app_id)
        at = {t: applied_position(s) for t, s in states.items()}
        behind = {t: (at.get(t), pos) for t, pos in self.last.items() if at.get(t) != pos}
        rows = [row for s in states.values() for row in (s["budgets"] or {"s": []})["s"]]
        fired = sorted((row[0], row[9]) for row in rows if row[0] in self.raised)  # 9: fired
        missing = sorted(_describe(self.records[i]) for i in unpublished)
        self.status = (
            f"records not published: {missing}; (state, last event) behind: "
            f"{behind}; raised budgets' thresholds fired: {fired}"
        )
        raised_ok = len(fired) == len(self.raised) and all(f == [0.5] for _n, f in fired)
        return not unpublished and not behind and raised_ok


def _check_spend(states: dict[str, dict[str, Any]], placed: list[Placed]) -> None:
    expected = _expected_cells(placed)
    assert sorted(states) == sorted(expected)
    for tenant, cells in expected.items():
        got = {
            (c.window, c.dimension, c.key): (c.cost_usd, c.calls)
            for c in spend_cells(states[tenant])
        }
        assert got == cells, f"{tenant}: spend differs from the events' sum"


async def _check_positions_never_go_back(settings: Settings, app_id: str) -> None:
    """Per tenant, in changelog order, the applied (partition, offset) never decreases: no
    worker writes an older state over a newer one."""
    seen: dict[str, Position] = {}
    for m in await _read(settings, f"{app_id}-spend-changelog"):
        key = orjson.loads(m.key)
        pos = None if m.value is None else applied_position(orjson.loads(m.value))
        if pos is not None:
            back = f"{key}: changelog [{m.partition}]@{m.offset} goes back from {seen.get(key)}"
            assert pos >= seen.get(key, pos), f"{back} to {pos}"
            seen[key] = pos


async def _check_store(settings: Settings, expected: list[Record]) -> dict[str, int]:
    """Run the record sink over both topics into a fresh store: one row per id, the expected
    ids only. Returns the ids the topics carry more than once, with their counts."""
    published = await _published_ids(settings)
    with open_store(settings, own=True) as store:
        migrate(store)
        flushes: asyncio.Queue[None] = asyncio.Queue()
        sink = RecordSink(
            settings,
            store,
            on_flush=lambda _b: flushes.put_nowait(None),
            consumer_options=FAST_GROUP,
        )
        task = asyncio.create_task(sink.run())
        try:
            async with asyncio.timeout(30):  # until every message of both topics is handled
                while sink.processor.counters.handled < sum(published.values()):
                    await flushes.get()
        finally:
            sink.stop()
            await task
        alerts = store.query(
            "SELECT alert_id, kind, scope_key, window, details FROM agentaudit.alerts"
        ).result_rows
        controls = store.query(
            "SELECT control_id, scope_key, action FROM agentaudit.control"
        ).result_rows
    assert len({r[0] for r in alerts}) == len(alerts), "an alert id stored twice"
    assert len({r[0] for r in controls}) == len(controls), "a control id stored twice"
    want = [r for r in expected if isinstance(r, Alert)]
    assert {(k, s, w, orjson.loads(d).get("threshold")) for _i, k, s, w, d in alerts} == {
        (a.kind, a.scope.key, a.window, a.details.get("threshold")) for a in want
    }
    assert {r[0] for r in alerts} == {a.alert_id for a in want}
    want_controls = [c for c in expected if isinstance(c, ControlMessage)]
    assert sorted(tuple(r) for r in controls) == sorted(
        (c.control_id, c.scope.key, c.action.value) for c in want_controls
    )
    return {i: n for i, n in published.items() if n > 1}


def _six(settings: Settings) -> tuple[Settings, str]:
    """The test's settings with six partitions, and a faust app id of its own."""
    return settings.model_copy(update={"partitions": PARTITIONS}), f"jobs-{uuid.uuid4().hex[:10]}"


# -- the tests -------------------------------------------------------------------------------


_OPEN_STALL = pytest.mark.skipif(
    os.environ.get("FAULT_MATRIX") != "full",
    reason="open intermittent stall (1 of 13 runs on 2026-12-07, in CI under load): after the "
    "restart one partition's second half was not applied within 45 s, with no hole logged; "
    "`./run faults` runs it (README Reliability)",
)


@pytest.mark.parametrize(
    "fault",
    [pytest.param("sigkill_after_first_half", marks=_OPEN_STALL), "crash_after_publish"],
)
async def test_jobs_killed_and_restarted_lose_no_spend_and_store_each_alert_once(
    settings: Settings, tmp_path: Path, fault: str
) -> None:
    """The worker dies, the second half is produced while it is down, a new worker takes
    over. faust commits offsets every 2.8 s, so the new worker replays (most of) what the
    dead one applied: it must skip what the recovered state holds and apply the rest once.

    - `sigkill_after_first_half`: SIGKILL once all of the first half's records are on the
      topics and its state is on the changelog: the new worker recovers every partition's
      state and starts on a backlog of replayed and new events.
    - `crash_after_publish`: the worker exits right after its first records are acknowledged,
      before that batch's state is written: the replay re-publishes the same ids, which the
      topic then carries twice and the store keeps once.
    """
    settings, app_id = _six(settings)
    budgets, first_half, second_half = _workload(_now())
    await ensure_topics(settings)
    await publish_budgets(settings, budgets)
    first = await _produce(settings, first_half)
    assert any(isinstance(r, Alert) for r in _expected_records(budgets, first))

    crash = "after_publish" if fault == "crash_after_publish" else None
    worker = JobsProcess(settings, app_id, tmp_path / "jobs-1.log", crash=crash)
    try:
        if crash:
            assert worker.proc.wait(45) == CRASH_EXIT_CODE, worker.output()
        else:
            want_first = _expected_records(budgets, first)
            await _until(
                "the first half",
                _Done(settings, app_id, want_first, _last_positions(first)),
                [worker],
            )
    finally:
        worker.kill()
    at_kill = {t: applied_position(s) for t, s in (await _spend_states(settings, app_id)).items()}
    applied = sum(
        (at_kill.get(orjson.loads(v)["tenant_id"]) or (-1, -1)) >= (p, o) for p, o, v in first
    )
    # the batch that published is not in the state; else the whole first half is
    assert applied < len(first) if crash else applied == len(first)

    placed = first + await _produce(settings, second_half)
    want = _expected_records(budgets, placed)
    restarted = JobsProcess(settings, app_id, tmp_path / "jobs-2.log")
    try:
        done = _Done(settings, app_id, want, _last_positions(placed))
        await _until("all records and spend", done, [restarted])
    finally:
        restarted.stop()

    await _check_positions_never_go_back(settings, app_id)
    _check_spend(await _spend_states(settings, app_id), placed)
    republished = await _check_store(settings, want)
    if crash:
        assert republished, "the replayed batch re-publishes its records under the same ids"
    print(
        f"\n{fault}: {applied}/{len(first)} first-half events in the persisted state at the "
        f"kill; {len(want)} records expected; {len(republished)} published twice"
    )


@pytest.mark.faults
@pytest.mark.skipif(
    os.environ.get("FAULT_MATRIX") != "full",
    reason="40 s: runs in `./run faults` (FAULT_MATRIX=full); it stalled about 1 run in 4 before "
    "the jobs' fence asked again for lost seeks (stream_jobs/delivery.py), 0 in 19 runs after",
)
async def test_two_workers_share_the_partitions_and_agree_with_one(
    settings: Settings, tmp_path: Path
) -> None:
    """Worker A takes the first half alone; B joins (the rebalance hands half of A's
    partitions over through the changelog); the second half is split between them; then
    every tenant budget is raised at run time, which each worker applies to the tenants it
    holds: a worker must not write what it still remembers of a tenant it no longer owns.

    After the rebalance, A's consumer skips ahead once in a partition it kept (the fault
    faust's consumer showed in about one run in ten: events after a hole were delivered and
    the hole's events, delivered later, were skipped as replays; spend lost, thresholds
    missed). The jobs must notice the hole, seek back and apply every event once."""
    settings, app_id = _six(settings)
    budgets, first_half, second_half = _workload(_now())
    raised = [
        b.model_copy(update={"limit_usd": 2 * (b.limit_usd or 0)})
        for b in budgets
        if b.scope is BudgetScope.TENANT
    ]
    await ensure_topics(settings)
    await publish_budgets(settings, budgets)
    a = JobsProcess(settings, app_id, tmp_path / "jobs-a.log", fault="skip_ahead_after_rebalance")
    b: JobsProcess | None = None
    try:
        first = await _produce(settings, first_half)
        alone = _Done(settings, app_id, _expected_records(budgets, first), _last_positions(first))
        await _until("A's first half", alone, [a])
        b = JobsProcess(settings, app_id, tmp_path / "jobs-b.log")

        async def split() -> bool:
            got_a, got_b = a.assignments(), b.assignments() if b else []
            return bool(
                got_a
                and got_b
                and got_a[-1]
                and got_b[-1]
                and sorted(got_a[-1] + got_b[-1]) == list(range(PARTITIONS))
            )

        await _until("both workers assigned", split, [a, b])
        placed = first + await _produce(settings, second_half)
        last = _last_positions(placed)
        shared = _Done(settings, app_id, _expected_records(budgets, placed), last)
        await _until("all records and spend", shared, [a, b])
        await publish_budgets(settings, raised)
        want = _expected_records(budgets, placed, raised)
        await _until(
            "the raised budgets applied", _Done(settings, app_id, want, last, raised), [a, b]
        )
        assignment = (a.assignments()[-1], b.assignments()[-1])
        skipped = [line for line in a.output().splitlines() if line.startswith("SKIPPED")]
    finally:
        for w in (a, b):
            if w is not None:
                w.stop()

    await _check_positions_never_go_back(settings, app_id)
    _check_spend(await _spend_states(settings, app_id), placed)
    republished = await _check_store(settings, want)
    assert skipped, "A's consumer was meant to skip ahead once after the rebalance"
    print(
        f"\nA owned partitions {assignment[0]}, B {assignment[1]}; A {skipped[0].lower()}; "
        f"{len(republished)} ids published more than once"
    )
