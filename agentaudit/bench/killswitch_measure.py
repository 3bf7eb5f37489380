"""Kill-switch propagation delay, SDK side: a BLOCK published on the control topic → the SDK
refuses work.

Each round publishes a BLOCK for a bench tenant with a plain aiokafka producer, then waits
for the client's control state to change (a callback, no polling or sleeping) and calls
`client.check()` after each change until it raises `Blocked`; the delay is from just before
the publish to that first refusal. Then it publishes the UNBLOCK and waits, the same way,
until `check()` passes again (timed too). By default the rounds run on a fresh compacted
topic of their own, so the measurement never blocks anything on the real control topic.

The stream-job part (threshold crossed → BLOCK published) is measured separately.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from agentaudit_schemas.records import (
    ControlAction,
    ControlMessage,
    ControlReason,
    Scope,
    record_id,
)

BENCH_TENANT = "bench-killswitch"
BENCH_AGENT = "bench-agent"


@dataclass(frozen=True)
class Propagation:
    """Delays in milliseconds, one per round."""

    block_ms: list[float]
    unblock_ms: list[float]


def nearest_rank(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by nearest rank: an observed value, defined for any n >= 1."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _control(action: ControlAction, round_no: int) -> ControlMessage:
    scope = Scope(tenant_id=BENCH_TENANT, agent_id=BENCH_AGENT)
    issued_at = datetime.now(UTC)
    reason = (
        ControlReason.BREAKER_OPEN
        if action is ControlAction.BLOCK
        else ControlReason.BREAKER_CLOSED
    )
    return ControlMessage(
        control_id=record_id("bench", scope.key, action.value, round_no, issued_at.isoformat()),
        scope=scope,
        action=action,
        reason=reason,
        message=f"kill-switch propagation benchmark, round {round_no}",
        runbook=None,
        issued_at=issued_at,
        issued_by="agentaudit-bench",
    )


async def _create_topic(bootstrap: str, topic: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(topic, 1, 1, topic_configs={"cleanup.policy": "compact"})]
        )
    finally:
        await admin.close()


async def propagation_samples(
    bootstrap: str, n: int, *, control_topic: str | None = None, timeout_s: float = 10.0
) -> Propagation:
    """Run `n` block/unblock rounds; raises TimeoutError if one does not arrive in `timeout_s`."""
    from aiokafka import AIOKafkaProducer

    from agentaudit_sdk import Blocked, Client
    from agentaudit_sdk.kafka import KafkaTransport

    tag = uuid.uuid4().hex[:10]
    if control_topic is None:
        control_topic = f"agentaudit.bench.{tag}.control"
        await _create_topic(bootstrap, control_topic)
    client = Client(
        KafkaTransport(bootstrap, f"agentaudit.bench.{tag}.events"),
        tenant_id=BENCH_TENANT,
        agent_id=BENCH_AGENT,
        control_topic=control_topic,
        budgets_topic=f"agentaudit.bench.{tag}.budgets",  # absent: read as empty
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    loop = asyncio.get_running_loop()
    changed = asyncio.Event()
    unsubscribe = client.control.on_change(lambda: loop.call_soon_threadsafe(changed.set))
    await producer.start()
    try:
        if not await client.control.await_ready(timeout_s):
            raise TimeoutError(f"the SDK did not load {control_topic} within {timeout_s}s")

        def refuses() -> bool:
            try:
                client.check()
            except Blocked:
                return True
            return False

        async def until(want_refusal: bool) -> None:
            async with asyncio.timeout(timeout_s):
                while refuses() is not want_refusal:
                    await changed.wait()
                    changed.clear()

        key = Scope(tenant_id=BENCH_TENANT, agent_id=BENCH_AGENT).key.encode()
        blocks: list[float] = []
        unblocks: list[float] = []
        for round_no in range(n):
            for action, want, out in (
                (ControlAction.BLOCK, True, blocks),
                (ControlAction.UNBLOCK, False, unblocks),
            ):
                value = _control(action, round_no).model_dump_json().encode()
                changed.clear()
                t0 = time.perf_counter()
                await producer.send(control_topic, value, key=key)
                await until(want)
                out.append((time.perf_counter() - t0) * 1000.0)
        return Propagation(blocks, unblocks)
    finally:
        unsubscribe()
        await producer.stop()
        await client.ashutdown(10)


async def measure_propagation(
    bootstrap: str, n: int, *, control_topic: str | None = None
) -> tuple[float, float]:
    """p50 and p99 (ms) of the delay from publishing a BLOCK to `client.check()` refusing."""
    samples = await propagation_samples(bootstrap, n, control_topic=control_topic)
    return nearest_rank(samples.block_ms, 0.5), nearest_rank(samples.block_ms, 0.99)
