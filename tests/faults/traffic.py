"""Load for the fault scenarios: valid events with seeded duplicate deliveries and junk,
produced at a steady pace from a background thread while the scenario breaks things."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer

from tests.factories import event_dict, wire

Message = tuple[bytes | None, bytes | None]


@dataclass
class Traffic:
    """What a scenario sends, and what the store must hold afterwards."""

    messages: list[Message]
    unique_events: int
    duplicates: int
    junk: int

    @property
    def duplicate_share(self) -> float:
        return self.duplicates / max(1, self.unique_events)


def build_traffic(
    rng: random.Random,
    events: int,
    tenants: int,
    dup_rate: float = 0.06,
    junk_every: int = 250,
    prefix: str = "kt",
) -> Traffic:
    """`events` unique events over `tenants` tenants. A share `dup_rate` of them is delivered
    twice, the same bytes under the same key (an SDK retry whose first attempt did land), the
    copy either right behind the original or up to 400 messages later; one undecodable
    message per `junk_every` events."""
    out: list[Message] = []
    pending: dict[int, list[Message]] = {}
    dups = junk = 0
    for i in range(events):
        tenant = f"{prefix}-{rng.randrange(tenants)}"
        msg: Message = (
            tenant.encode(),
            wire(event_dict(tenant=tenant, kind=rng.choice(["llm_call", "tool_call"]))),
        )
        out.append(msg)
        if rng.random() < dup_rate:
            dups += 1
            pending.setdefault(i + rng.choice([0, rng.randrange(1, 400)]), []).append(msg)
        out.extend(pending.pop(i, []))
        if i % junk_every == junk_every - 1:
            junk += 1
            out.append((tenant.encode(), b'{"event_id": "junk-' + str(i).encode() + b'", broken'))
    for later in pending.values():
        out.extend(later)
    return Traffic(out, events, dups, junk)


async def produce(
    bootstrap: str,
    topic: str,
    messages: Sequence[Message],
    rate: float | None = None,
    chunk: int = 100,
    max_request_size: int = 2 << 20,
) -> None:
    """Send in order, `chunk` messages at a time, at most `rate` messages/s (pacing the load
    generator, not waiting for anything)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, max_request_size=max_request_size, linger_ms=5
    )
    await producer.start()
    try:
        began = time.monotonic()
        for start in range(0, len(messages), chunk):
            futures = [
                await producer.send(topic, v, key=k) for k, v in messages[start : start + chunk]
            ]
            await asyncio.gather(*futures)
            if rate:
                ahead = (start + chunk) / rate - (time.monotonic() - began)
                if ahead > 0:
                    await asyncio.sleep(ahead)
    finally:
        await producer.stop()


@dataclass
class BackgroundProducer:
    """`produce` on its own thread and event loop; `join()` re-raises its error."""

    bootstrap: str
    topic: str
    messages: Sequence[Message]
    rate: float | None = None
    error: BaseException | None = None
    thread: threading.Thread = field(init=False)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._run, name="fault-producer", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(produce(self.bootstrap, self.topic, self.messages, self.rate))
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread in join()
            self.error = exc

    def start(self) -> BackgroundProducer:
        self.thread.start()
        return self

    @property
    def done(self) -> bool:
        return not self.thread.is_alive()

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"the producer did not finish in {timeout}s"
        if self.error is not None:
            raise self.error
