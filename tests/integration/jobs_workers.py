"""The stream-jobs fault tests' workers and checks: `agentaudit jobs` children with test
hooks, waiting on their progress, and reading back what they left on the topics and in a store.

`RUNNER` runs the real CLI (`agentaudit jobs`) plus test-only hooks: the app id from
`AGENTAUDIT_JOBS_APP_ID` (now also the setting `jobs_app_id`, whose default is one id per
events topic; the tests name theirs to read its changelogs), the stall watchdog's bound from
`AGENTAUDIT_TEST_STALL_AFTER_S`, an `ASSIGNED <partitions>` line per rebalance, an optional
crash and an optional consumer fault (`JobsProcess`).
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from agentaudit.settings import Settings
from agentaudit.sink.faults import CRASH_EXIT_CODE
from agentaudit.sink.pipeline_records.sink import RecordSink
from agentaudit.store import open_store
from agentaudit.store.migrations import migrate
from agentaudit_schemas.budgets import Budget
from agentaudit_schemas.records import Alert, ControlMessage
from stream_jobs.jobs import Record
from stream_jobs.spend.readout import applied_position, spend_cells
from tests.conftest import settings_env
from tests.helpers_wait import poll_until
from tests.integration.jobs_workload import (
    CLOCK_SHIFT,
    PARTITIONS,
    Placed,
    Position,
    describe,
    expected_cells,
    record_id,
)

STALL_AFTER_S = 3.0
"""The workers' stall watchdog bound (the jobs' own is 10 s): a fault test waits less."""

FAST_GROUP = {"session_timeout_ms": 2000, "heartbeat_interval_ms": 500}
RUNNER = """
import os, sys
from datetime import UTC, datetime, timedelta
import stream_jobs.app as jobs_app
import stream_jobs.runtime as runtime
from stream_jobs.runtime.watchdog import StallWatch
_init, _publish = jobs_app.StreamJobsApp.__init__, jobs_app.StreamJobsApp._publish
_wait_next_records = runtime.FastConsumer._wait_next_records
_shift = timedelta(seconds=float(os.environ["AGENTAUDIT_TEST_CLOCK_SHIFT_S"]))
_skip = {"topic": None, "assignments": 0, "done": False}

def _init_for_tests(self, settings, **options):
    options.setdefault("app_id", os.environ["AGENTAUDIT_JOBS_APP_ID"])
    options.setdefault("clock", lambda: datetime.now(UTC) + _shift)
    _init(self, settings, **options)
    self.stalls = StallWatch(float(os.environ["AGENTAUDIT_TEST_STALL_AFTER_S"]))
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

async def _drop_first_poll(self, timeout):  # once, after the first assignment
    records, active = await _wait_next_records(self, timeout)
    armed = _skip["assignments"] > 0 and not _skip["done"]
    for tp, found in (records or {}).items() if armed else ():
        if tp.topic == _skip["topic"]:
            # taken from aiokafka (its position is past them) and dropped, all of them
            del records[tp]
            _skip["done"] = True
            print("DROPPED", tp.partition, found[0].offset, found[-1].offset, flush=True)
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
if os.environ.get("AGENTAUDIT_TEST_JOBS_FAULT") == "drop_first_poll":
    runtime.FastConsumer._wait_next_records = _drop_first_poll
from agentaudit.cli.main import main
sys.argv = ["agentaudit", "jobs"]
main()
"""

PROGRESS_DEADLINE_S = 120.0
"""Longest a jobs worker may take to reach a test's next milestone (start included)."""


async def read_topic(settings: Settings, topic: str) -> list[Any]:
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


async def spend_states(settings: Settings, app_id: str) -> dict[str, dict[str, Any]]:
    """Tenant → latest value of table `spend`, from its changelog (faust's name for it)."""
    latest: dict[str, dict[str, Any] | None] = {}
    for m in await read_topic(settings, f"{app_id}-spend-changelog"):
        latest[orjson.loads(m.key)] = None if m.value is None else orjson.loads(m.value)
    return {k: v for k, v in latest.items() if v is not None and not k.startswith("partition:")}


async def published_ids(settings: Settings) -> Counter[str]:
    """Record id → how many times the alerts and control topics carry it."""
    ids: Counter[str] = Counter()
    for topic in (settings.alerts_topic, settings.control_topic):
        for m in await read_topic(settings, topic):
            doc = orjson.loads(m.value)
            if doc.get("record") == "heartbeat":
                continue  # the jobs' liveness, not a record of theirs (a new id every beat)
            ids[doc.get("alert_id") or doc.get("control_id") or doc.get("transition_id")] += 1
    return ids


class JobsProcess:
    """One `agentaudit jobs` child (clock at `shifted_now()`); its output goes to a file (read for
    ASSIGNED lines). `crash="after_publish"` makes it exit (as kill -9 would leave it) right
    after the first records it publishes are acknowledged, before that batch's state is
    written. `fault="skip_ahead_after_rebalance"`: after its first rebalance, its consumer
    takes one poll's records of a partition and delivers only the last one (what faust's
    consumer did when it dropped a poll mid-rebalance and its seek back failed).
    `fault="drop_first_poll"`: after its first assignment, its consumer takes one poll's
    records of a partition and drops them all (what faust did when it cleared the streams'
    queues at the end of a rebalance): only the stall watchdog can notice."""

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
            "AGENTAUDIT_TEST_STALL_AFTER_S": str(STALL_AFTER_S),
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
                [sys.executable, "-c", RUNNER], env=env, stdout=out, stderr=subprocess.STDOUT
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stalls(self) -> list[str]:
        """The stall watchdog's warnings in the output."""
        return [line for line in self.output().splitlines() if "nothing applied from" in line]

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


async def until(
    what: str, check: Callable[[], Awaitable[bool]], workers: list[JobsProcess]
) -> None:
    """Poll other processes' progress (nothing to await across processes); on timeout, say
    what is missing (`check.status`, if any) and show the workers' output."""

    def detail() -> str:
        logs = "\n".join(w.output()[-3000:] for w in workers)
        return f"{getattr(check, 'status', '')}\n{logs}"

    # A deadline, not a wait: generous because a faust worker's start, recovery and rebalances
    # took over 45 s at load averages of 13-18 (a passing run takes a few seconds)
    await poll_until(
        check,
        PROGRESS_DEADLINE_S,
        what,
        interval=0.2,
        detail=detail,
        check=lambda: [w.alive() for w in workers],
    )


class Done:
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
        self.records = {record_id(r): r for r in records}
        self.raised = {b.name for b in raised}
        self.status = "not checked yet"

    async def __call__(self) -> bool:
        unpublished = set(self.records) - set(await published_ids(self.settings))
        states = await spend_states(self.settings, self.app_id)
        at = {t: applied_position(s) for t, s in states.items()}
        behind = {t: (at.get(t), pos) for t, pos in self.last.items() if at.get(t) != pos}
        rows = [row for s in states.values() for row in (s["budgets"] or {"s": []})["s"]]
        fired = sorted((row[0], row[9]) for row in rows if row[0] in self.raised)  # 9: fired
        missing = sorted(describe(self.records[i]) for i in unpublished)
        self.status = (
            f"records not published: {missing}; (state, last event) behind: "
            f"{behind}; raised budgets' thresholds fired: {fired}"
        )
        raised_ok = len(fired) == len(self.raised) and all(f == [0.5] for _n, f in fired)
        return not unpublished and not behind and raised_ok


def check_spend(states: dict[str, dict[str, Any]], placed: list[Placed]) -> None:
    expected = expected_cells(placed)
    assert sorted(states) == sorted(expected)
    for tenant, cells in expected.items():
        got = {
            (c.window, c.dimension, c.key): (c.cost_usd, c.calls)
            for c in spend_cells(states[tenant])
        }
        assert got == cells, f"{tenant}: spend differs from the events' sum"


async def check_positions_never_go_back(settings: Settings, app_id: str) -> None:
    """Per tenant, in changelog order, the applied (partition, offset) never decreases: no
    worker writes an older state over a newer one."""
    seen: dict[str, Position] = {}
    for m in await read_topic(settings, f"{app_id}-spend-changelog"):
        key = orjson.loads(m.key)
        pos = None if m.value is None else applied_position(orjson.loads(m.value))
        if pos is not None:
            back = f"{key}: changelog [{m.partition}]@{m.offset} goes back from {seen.get(key)}"
            assert pos >= seen.get(key, pos), f"{back} to {pos}"
            seen[key] = pos


async def check_store(settings: Settings, expected: list[Record]) -> dict[str, int]:
    """Run the record sink over both topics into a fresh store: one row per id, the expected
    ids only. Returns the ids the topics carry more than once, with their counts."""
    published = await published_ids(settings)
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


def six(settings: Settings) -> tuple[Settings, str]:
    """The test's settings with six partitions, and a faust app id of its own."""
    return settings.model_copy(update={"partitions": PARTITIONS}), f"jobs-{uuid.uuid4().hex[:10]}"
