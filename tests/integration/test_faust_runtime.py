"""The stream-jobs faust runtime against the real local broker.

Tables come back from their changelog after a restart, batches are committed only once
processed (a crashed batch is delivered again, nothing is lost), and two app instances in
one process share the partitions of a consumer group. The commit and rebalance tests run
with per-record delivery and with batched delivery (`source_topic(batched=True)`: one
`BatchMessage` per partition and poll, acked as a whole offset range).
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import faust
import orjson
import pytest

from agentaudit.broker import ensure_topics
from agentaudit.settings import Settings
from stream_jobs.runtime import make_app, running, source_topic
from tests.factories import event_dict, wire
from tests.integration.helpers import produce_placed

pytestmark = pytest.mark.integration

QUICK = {"broker_session_timeout": 2.0, "broker_heartbeat_interval": 0.5}
"""The local broker answers a first join after half the session: 1 s instead of 3 s."""
TENANTS = [f"tenant-{i}" for i in range(5)]


class Seen:
    """Values an agent handled, in order, with waits on what has arrived."""

    def __init__(self) -> None:
        self.values: list[bytes] = []
        self._changed = asyncio.Event()

    def add(self, values: list[bytes]) -> None:
        self.values.extend(values)
        self._changed.set()

    async def until(self, wanted: set[bytes], timeout: float = 30) -> None:
        async with asyncio.timeout(timeout):
            while not wanted <= set(self.values):
                self._changed.clear()
                await self._changed.wait()


async def sentinels(settings: Settings, tag: str) -> set[bytes]:
    """One marker per partition: once all are seen, everything before them was delivered."""
    values = {p: f"sentinel-{tag}-{p}".encode() for p in range(settings.partitions)}
    await produce_placed(settings, [(p, b"sentinel", v) for p, v in values.items()])
    return set(values.values())


def tenant_of(value: bytes) -> str | None:
    return None if value.startswith(b"sentinel") else str(orjson.loads(value)["tenant_id"])


def counting_app(settings: Settings, app_id: str, seen: Seen) -> tuple[faust.App, Any]:
    """Counts events per tenant in a changelogged table, once per key per batch."""
    app = make_app(settings, app_id=app_id, **QUICK)
    schema: faust.Schema = faust.Schema(key_type=str, key_serializer="raw", value_serializer="json")
    table = app.Table("per_tenant", default=int, schema=schema)

    @app.agent(source_topic(app, settings.events_topic))
    async def count(stream: Any) -> None:
        async for values in stream.take(50, within=0.1):
            per_key: dict[str, int] = defaultdict(int)
            for value in values:
                tenant = tenant_of(value)
                if tenant:
                    per_key[tenant] += 1
            for key, n in per_key.items():
                table[key] += n
            seen.add(values)

    return app, table


async def test_table_is_recovered_from_its_changelog_after_restart(settings: Settings) -> None:
    await ensure_topics(settings)
    # each tenant in one partition, as the SDK keys them; 40 events each
    events = [
        (i % settings.partitions, t.encode(), wire(event_dict(tenant=t)))
        for i, t in enumerate(TENANTS)
        for _ in range(40)
    ]
    await produce_placed(settings, events)
    app_id = f"tables-{uuid.uuid4().hex[:8]}"

    first = Seen()
    app, table = counting_app(settings, app_id, first)
    async with running(app):
        await first.until({v for _, _, v in events})
        before = dict(table.items())
    assert before == {t: 40 for t in TENANTS}

    second = Seen()
    app, table = counting_app(settings, app_id, second)
    async with running(app):
        recovered = dict(table.items())
        await second.until(await sentinels(settings, "after-restart"))
    assert recovered == before  # the newest changelog records too (local broker end offsets)
    assert all(v.startswith(b"sentinel") for v in second.values), "offsets were not committed"


def received(values: list[Any], batched: bool) -> list[bytes]:
    """The message values a `take` list holds: batched delivery nests (offset, value, ms) lists."""
    return [item[1] for poll in values for item in poll] if batched else values


BATCHED = pytest.mark.parametrize("batched", [False, True], ids=["per-record", "batched"])


class Crash:
    """Makes the first batch holding b"poison" raise mid-batch (a bug escaping the body)."""

    def __init__(self, armed: bool = True) -> None:
        self.armed, self.happened = armed, asyncio.Event()
        self.batch: list[bytes] = []

    def maybe_raise(self, values: list[bytes]) -> None:
        if self.armed and b"poison" in values:
            self.armed, self.batch = False, list(values)
            self.happened.set()
            raise RuntimeError("simulated crash in the middle of a batch")


def taking_app(
    settings: Settings,
    app_id: str,
    batched: bool,
    take: int,
    *handlers: Callable[[list[bytes]], None],
) -> faust.App:
    """An agent taking lists of up to `take` (events or polled batches) and passing the values
    to each handler in turn; a handler that raises crashes the batch."""
    app = make_app(settings, app_id=app_id, **QUICK)

    @app.agent(source_topic(app, settings.events_topic, batched=batched))
    async def work(stream: Any) -> None:
        async for values in stream.take(take, within=0.1):
            values = received(values, batched)
            for handle in handlers:
                handle(values)

    return app


@BATCHED
async def test_offsets_are_committed_only_for_processed_batches(
    settings: Settings, batched: bool
) -> None:
    await ensure_topics(settings)
    parts = settings.partitions
    events = [(i % parts, b"k", f"event-{i}".encode()) for i in range(90)]
    events.insert(45, (1, b"k", b"poison"))
    # The first half is processed before the poison is sent: batched, one poll may hold a
    # whole partition, and the batches after a crashed one in the same `take` are released
    # unacknowledged, so with everything sent at once nothing might be committable at all.
    before, after = events[:45], events[45:]
    await produce_placed(settings, before)
    app_id = f"acks-{uuid.uuid4().hex[:8]}"

    first, crash = Seen(), Crash()
    async with running(taking_app(settings, app_id, batched, 10, crash.maybe_raise, first.add)):
        await first.until({v for _, _, v in before})
        await produce_placed(settings, after)
        await asyncio.wait_for(crash.happened.wait(), 30)
        await first.until(await sentinels(settings, "first"))  # faust restarted the agent
    second = Seen()
    async with running(taking_app(settings, app_id, batched, 10, second.add)):
        await second.until(await sentinels(settings, "second"))

    assert b"poison" in crash.batch
    assert set(crash.batch) <= set(second.values), "the crashed batch was acked"
    assert {v for _, _, v in events} <= set(first.values) | set(second.values), "events lost"
    committed = 0
    for p in range(parts):
        log = [v for q, _, v in events if q == p]
        again = [i for i, v in enumerate(log) if v in second.values]
        resumed_at = again[0] if again else len(log)
        # second saw a suffix of the partition, and first processed everything before it
        assert again == list(range(resumed_at, len(log))), f"partition {p}: not a suffix"
        assert set(log[:resumed_at]) <= set(first.values), f"partition {p}: committed unprocessed"
        committed += resumed_at
    assert committed > 0, "nothing was committed"


def owned(app: faust.App, topic: str) -> set[int]:
    return {tp.partition for tp in app.consumer.assignment() if tp.topic == topic}


@BATCHED
async def test_two_instances_in_one_process_share_the_partitions(
    settings: Settings, batched: bool
) -> None:
    await ensure_topics(settings)
    topic, everything = settings.events_topic, set(range(settings.partitions))
    app_id = f"shared-{uuid.uuid4().hex[:8]}"
    seen_a, seen_b, both = Seen(), Seen(), Seen()
    app_a = taking_app(settings, app_id, batched, 20, seen_a.add, both.add)
    app_b = taking_app(settings, app_id, batched, 20, seen_b.add, both.add)
    async with running(app_a):
        assert owned(app_a, topic) == everything
        async with running(app_b):
            assert owned(app_a, topic) and owned(app_b, topic)
            assert owned(app_a, topic) | owned(app_b, topic) == everything
            assert not owned(app_a, topic) & owned(app_b, topic)
            batch1 = [(i % settings.partitions, b"k", f"one-{i}".encode()) for i in range(60)]
            await produce_placed(settings, batch1)
            await both.until({v for _, _, v in batch1} | await sentinels(settings, "shared"))
            assert seen_a.values and seen_b.values
        # B left the group: A takes every partition over, from B's committed offsets
        batch2 = [(i % settings.partitions, b"k", f"two-{i}".encode()) for i in range(30)]
        await produce_placed(settings, batch2)
        await seen_a.until({v for _, _, v in batch2} | await sentinels(settings, "alone"))
        assert owned(app_a, topic) == everything
    handled = seen_a.values + seen_b.values
    assert len(handled) == len(set(handled)), "events handled twice across the rebalance"


# aiokafka's consumer stop raised a fetch task's CancelledError there, killing faust's
# consumer thread (and leaving the client's connections open): a thread exception fails it.
@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
async def test_stopping_with_the_broker_gone_is_bounded(tmp_path: Any) -> None:
    """faust's own stop waits forever on a broker that went away (final commit, group leave);
    `running` abandons it after `stop_timeout`, so a worker can be stopped during an outage."""
    from agentaudit.broker import LocalBroker

    with LocalBroker() as broker:
        own = Settings(kafka_bootstrap=broker.bootstrap, data_dir=tmp_path)
        await ensure_topics(own)
        app = taking_app(own, f"outage-{uuid.uuid4().hex[:8]}", True, 20)
        async with asyncio.timeout(60):  # stock faust: still stopping after minutes
            async with running(app, stop_timeout=3.0):
                broker.stop()
    assert app.should_stop
