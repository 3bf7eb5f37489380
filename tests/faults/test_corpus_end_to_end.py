"""The malformed-input corpus through a real worker (stream jobs on, as deployed) while other
tenants send a steady stream: every valid case stored, every invalid one a dead letter with
its reason, the worker never stops, and the other tenants' end-to-end latency stays bounded."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from agentaudit.broker import LocalBroker, ensure_topics
from agentaudit.settings import Settings
from tests.factories import event_dict, wire
from tests.faults.conftest import FULL, fault_settings
from tests.faults.corpus import STORED, Case, cases, sample
from tests.faults.harness import WorkerProcess, query, verify_trail, wait_served, wait_until

STEADY_TENANTS = 4
STEADY_RATE = 40.0
"""Valid events/s from the other tenants while the poison goes in."""
BASELINE_EVENTS = 40
"""Steady events stored before the corpus goes in, once the first one was (the sink's start
is not steady state): their latency is this run's yardstick."""
LATENCY_FLOOR_S = 5.0
STALL_FACTOR = 4.0
"""Send → stored for a steady event while the corpus goes in may be at most STALL_FACTOR times
the slowest before it (at least LATENCY_FLOOR_S): a bound measured in the same run, so a loaded
box raises both (a fixed 15 s failed once at load ~10), while a sink stalled by one poison
message (a retry loop, a stuck partition) stays far past it."""


@dataclass
class SteadyStream:
    """Other tenants' valid events at a fixed pace on their own thread; remembers when each
    was acknowledged by the broker (wall clock, the same clock as the store's `ingested_at`)."""

    settings: Settings
    sent_at: dict[str, float] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.settings.kafka_bootstrap)
        await producer.start()
        try:
            i = 0
            while not self.stop.wait(
                1 / STEADY_RATE
            ):  # pacing the load, not waiting on a condition
                tenant = f"steady-{i % STEADY_TENANTS}"
                doc = event_dict(tenant=tenant)
                await producer.send_and_wait(
                    self.settings.events_topic, wire(doc), key=tenant.encode()
                )
                self.sent_at[doc["event_id"]] = time.time()
                i += 1
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            self.error = exc
        finally:
            await producer.stop()


async def _produce_cases(settings: Settings, corpus: Sequence[Case]) -> dict[tuple[int, int], Case]:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, max_request_size=12 << 20
    )
    await producer.start()
    try:
        where: dict[tuple[int, int], Case] = {}
        for case in corpus:
            meta = await producer.send_and_wait(
                settings.events_topic, case.value, key=case.key, timestamp_ms=case.timestamp_ms
            )
            where[(meta.partition, meta.offset)] = case
        return where
    finally:
        await producer.stop()


def _outcomes(settings: Settings) -> dict[tuple[int, int], str] | None:
    t = {"t": settings.events_topic}
    stored = query(
        settings,
        "SELECT kafka_partition, kafka_offset FROM agentaudit.events "
        "WHERE kafka_topic = {t:String}",
        t,
    )
    dead = query(
        settings,
        "SELECT kafka_partition, kafka_offset, reason FROM agentaudit.dead_letters "
        "WHERE source_topic = {t:String}",
        t,
    )
    if stored is None or dead is None:
        return None
    out = {(int(p), int(o)): STORED for p, o in stored}
    out.update({(int(p), int(o)): str(r) for p, o, r in dead})
    return out


def _sent(steady: SteadyStream, start: int, count: int) -> list[str]:
    """Ids of the `count` steady events sent from the `start`-th on; [] until all are sent."""
    ids = list(steady.sent_at)[start : start + count]
    return ids if len(ids) == count else []


def _steady_latency(
    settings: Settings,
    worker: WorkerProcess,
    ids: Callable[[], list[str]],
    sent_at: dict[str, float],
) -> list[float]:
    """Send → stored seconds of the steady events `ids()` names, sorted, once all are stored
    (`ids` is called again each poll: the baseline's first events are still being sent)."""
    rows = wait_until(
        lambda: query(
            settings,
            "SELECT toString(event_id), toUnixTimestamp64Micro(ingested_at) "
            "FROM agentaudit.events WHERE has({ids:Array(String)}, toString(event_id))",
            {"ids": ids()},
        ),
        lambda r: len(r) == len(ids()) > 0,
        60,
        "every steady event stored",
        worker,
    )
    return sorted(us / 1e6 - sent_at[i] for i, us in rows)


def test_corpus_through_a_running_worker(broker: LocalBroker, tmp_path: Path, figures: Any) -> None:
    corpus = cases() if FULL else sample(cases(), lambda i: i % 2 == 0)
    settings = fault_settings(broker, tmp_path)
    asyncio.run(ensure_topics(settings))
    worker = WorkerProcess(settings, tmp_path / "worker.log", 1, stream_jobs=True).start()
    steady = SteadyStream(settings)
    figures(
        cases=len(corpus),
        valid=sum(c.valid for c in corpus),
        invalid=sum(not c.valid for c in corpus),
        full=FULL,
    )
    began = time.monotonic()
    try:
        wait_served(worker)
        steady.thread.start()
        _steady_latency(settings, worker, lambda: _sent(steady, 0, 1), steady.sent_at)  # warm
        warm = len(steady.sent_at)
        baseline = _steady_latency(
            settings, worker, lambda: _sent(steady, warm, BASELINE_EVENTS), steady.sent_at
        )
        corpus_from = len(steady.sent_at)
        where = asyncio.run(_produce_cases(settings, corpus))
        try:
            wait_until(
                lambda: _outcomes(settings),
                lambda seen: where.keys() <= seen.keys(),
                120,
                "every corpus case stored or dead-lettered",
                worker,
            )
        finally:
            steady.stop.set()
            steady.thread.join(30)
            seen = _outcomes(settings) or {}
            wrong = [
                f"{c.group}/{c.name}: {seen.get(pos, 'neither stored nor dead-lettered')}, "
                f"expected {'|'.join(sorted(c.expect))}"
                for pos, c in where.items()
                if seen.get(pos) not in c.expect
            ]
            figures(wrong=len(wrong), worker_alive=worker.alive())
        assert steady.error is None, steady.error
        assert not wrong, f"{len(wrong)} of {len(corpus)} cases wrong:\n" + "\n".join(wrong)
        during = list(steady.sent_at)[corpus_from:]
        latency = _steady_latency(settings, worker, lambda: during, steady.sent_at)
        bound = max(LATENCY_FLOOR_S, STALL_FACTOR * baseline[-1])
        figures(
            steady_events=len(during),
            baseline_max_s=round(baseline[-1], 3),
            steady_p50_s=round(latency[len(latency) // 2], 3),
            steady_max_s=round(latency[-1], 3),
            bound_s=round(bound, 3),
            elapsed_s=round(time.monotonic() - began, 1),
        )
        assert latency[-1] <= bound, (
            f"a steady tenant's event took {latency[-1]:.1f}s while the corpus went in, "
            f"{baseline[-1]:.1f}s at most before it"
        )
        valid = sum(c.valid for c in corpus)
        trail = verify_trail(settings, valid + len(steady.sent_at), len(corpus) - valid)
        figures(stored=trail["stored"], dead_letters=trail["dead_letters"])
        worker.check_alive()
    finally:
        steady.stop.set()
        worker.ensure_stopped()
