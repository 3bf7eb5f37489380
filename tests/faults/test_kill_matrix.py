"""kill -9 of the worker at seeded random moments, duplicates in the stream, then restarts.

At the end: `count() = uniqExact(event_id) =` unique events sent, every dead letter once,
every chain verifies, chain order = Kafka offset order within each (tenant, partition),
and no sink process outlives its SIGKILLed worker.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agentaudit.broker import LocalBroker, ensure_topics
from tests.faults.conftest import FULL, fault_settings
from tests.faults.harness import (
    WorkerProcess,
    counts,
    reap_orphans,
    sink_children_of_group,
    verify_trail,
    wait_until,
)
from tests.faults.traffic import BackgroundProducer, build_traffic


@dataclass(frozen=True)
class Run:
    seed: int
    sink_processes: int
    stream_jobs: bool = False
    events: int = 3000
    kills: int = 4

    def __str__(self) -> str:
        return f"seed{self.seed}-p{self.sink_processes}{'-jobs' if self.stream_jobs else ''}"


# CI's case: two processes (where orphans once stalled restarts), two kills (each restart is
# the cost: 5 restarts took 60-140 s of a CI worker); the full matrix has 5 kills per run.
FAST = [Run(seed=1, sink_processes=2, events=2000, kills=2)]
MATRIX = [Run(s, p, events=5000, kills=5) for s in (1, 2, 3) for p in (1, 2)] + [
    Run(seed=4, sink_processes=2, stream_jobs=True, events=5000, kills=5)
]

PRODUCE_RATE = 1500.0
"""Messages/s of each slice: about as fast as one sink process of this size stores them."""
ORPHAN_GRACE_S = 20.0
"""How long a SIGKILLed worker's sink processes may take to notice and exit."""


@pytest.mark.parametrize("run", MATRIX if FULL else FAST, ids=str)
def test_worker_killed_at_random_moments_then_restarted(
    broker: LocalBroker, tmp_path: Path, figures: Any, run: Run
) -> None:
    rng = random.Random(run.seed)
    settings = fault_settings(broker, tmp_path, sink_batch_size=200)
    traffic = build_traffic(rng, run.events, tenants=12)
    assert traffic.duplicate_share >= 0.05, (
        f"seed {run.seed}: only {traffic.duplicate_share:.1%} duplicates"
    )
    # Kill moments, seeded: a quarter during start-up (migrations, store recovery, group join),
    # the rest once the restarted worker stores again, up to 2.5 s into its work. What it
    # does at that instant varies run to run; the invariants may not depend on it.
    plan = [
        ("startup" if rng.random() < 0.25 else "sinking", round(rng.uniform(0.1, 2.5), 2))
        for _ in range(run.kills)
    ]
    figures(
        seed=run.seed,
        sink_processes=run.sink_processes,
        stream_jobs=run.stream_jobs,
        sent_unique=traffic.unique_events,
        duplicates_sent=traffic.duplicates,
        junk_sent=traffic.junk,
        messages=len(traffic.messages),
        kill_plan=plan,
    )
    asyncio.run(ensure_topics(settings))
    began = time.monotonic()
    # Each (re)start gets its own slice of the stream, produced while the worker starts and
    # sinks, so every kill lands with data in flight (not on an idle worker).
    n = len(traffic.messages)
    cuts = [n * i // (run.kills + 1) for i in range(run.kills + 2)]
    slices = [traffic.messages[cuts[i] : cuts[i + 1]] for i in range(run.kills + 1)]
    producer: BackgroundProducer | None = None
    worker = WorkerProcess(settings, tmp_path / "worker.log", run.sink_processes, run.stream_jobs)
    orphans: set[int] = set()
    crashed = 0
    at_kill: list[
        tuple[int, int] | None
    ] = []  # (events, dead letters) stored at each kill; None = not serving yet
    try:
        stored = 0
        for (phase, moment), piece in zip(plan, slices, strict=False):
            if producer is not None:
                producer.join(60)
            producer = BackgroundProducer(
                settings.kafka_bootstrap, settings.events_topic, piece, rate=PRODUCE_RATE
            ).start()
            worker.start()
            if phase == "sinking":
                c = wait_until(
                    lambda: counts(settings),
                    lambda c, before=stored: c[0] > before,
                    120,
                    f"seed {run.seed}: restarted worker stores again",
                    worker,
                )
                stored = c[0]
            try:
                worker.proc.wait(moment)  # type: ignore[union-attr]
                crashed += 1  # it exited by itself before the kill: a crash, reported below
            except subprocess.TimeoutExpired:
                children = worker.children()
                at_kill.append(c := counts(settings))
                stored = c[0] if c else stored
                worker.kill9()
                orphans |= reap_orphans(children, ORPHAN_GRACE_S)
        figures(
            kills=len(plan) - crashed,
            crashed_by_itself=crashed,
            orphans=len(orphans),
            stored_at_kills=at_kill,
        )
        assert producer is not None
        producer.join(60)
        producer = BackgroundProducer(
            settings.kafka_bootstrap, settings.events_topic, slices[-1]
        ).start()
        worker.start()
        producer.join(60)
        expected = (traffic.unique_events, traffic.junk)
        seen = wait_until(
            lambda: counts(settings),
            lambda c: c == expected,
            180,
            f"seed {run.seed}: final worker stores (events, dead letters) = {expected}",
            worker,
        )
        figures(stored=seen[0], dead_letters=seen[1])
        trail = verify_trail(settings, traffic.unique_events, traffic.junk)
        figures(tenants=trail["tenants"], chain_rows=trail["chain_rows"])
        code, took = worker.terminate()
        figures(elapsed_s=round(time.monotonic() - began, 1), stop_s=round(took, 1))
        assert code == 0, (
            f"seed {run.seed}: worker exit code {code} on SIGTERM:\n{worker.output_tail()}"
        )
        assert crashed == 0, f"seed {run.seed}: the worker exited {crashed} time(s) by itself"
        assert not orphans, (
            f"seed {run.seed}: sink processes outlived their killed worker: {orphans}"
        )
        left = sink_children_of_group(settings.consumer_group)
        assert not left, f"seed {run.seed}: sink processes left after the worker stopped: {left}"
    except BaseException:
        print(f"kill matrix {run}: seed {run.seed}, kill plan {plan}, worker log {worker.log_path}")
        raise
    finally:
        worker.ensure_stopped()
        reap_orphans(sink_children_of_group(settings.consumer_group), 0)
