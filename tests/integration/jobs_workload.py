"""The stream-jobs fault tests' workload, and what one uninterrupted run makes of it.

3000 `llm_call` events of six tenants, one per partition, in two halves, with daily budgets
crossed part-way (50 % in the first half, 80 % and 100 % in the second; one hard limit, one
per-user budget); the expected records are those of the pure `StreamJobs` over each
partition in offset order, the expected spend is the events' cost sum (priced with
`agentaudit_schemas.pricing`, not the jobs' own cost code) per window, dimension and key.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

from agentaudit.settings import Settings
from agentaudit_schemas.budgets import Budget, BudgetScope, WindowKind
from agentaudit_schemas.events import parse_event
from agentaudit_schemas.pricing import PricingTable, load_pricing
from agentaudit_schemas.records import Alert, BreakerTransition, ControlMessage
from stream_jobs.jobs import Record, StreamJobs
from stream_jobs.spend.windows import Calendar, window_at
from tests.factories import event_dict, wire

PARTITIONS = 6
PER_TENANT = 500
SEED = 20261121
MODELS = ("gpt-5-mini", "gpt-5-nano", "gpt-5")
USERS = ("u-1", "u-2", "u-3")
AGENTS = ("support-bot", "billing-bot")

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


def shifted_now() -> datetime:
    return datetime.now(UTC) + CLOCK_SHIFT


def workload(now: datetime) -> tuple[list[Budget], list[Message], list[Message]]:
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
        cost = event_cost(doc, pricing)
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


def event_cost(doc: dict[str, Any], pricing: PricingTable) -> Decimal:
    """The pricing table's cost of one event document (not the jobs' own cost code)."""
    usage = parse_event(wire(doc)).payload.usage  # type: ignore[attr-defined]
    return pricing.cost(doc["payload"]["provider"], doc["payload"]["request_model"], usage).usd


def expected_cells(placed: list[Placed]) -> dict[str, Cells]:
    """Tenant → (window label, dimension, key) → (USD, calls), summed from the events."""
    pricing = load_pricing()
    out: dict[str, Cells] = defaultdict(dict)
    for _p, _o, value in placed:
        doc = orjson.loads(value)
        usd, at = event_cost(doc, pricing), datetime.fromisoformat(doc["occurred_at"])
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


def expected_records(
    budgets: list[Budget], placed: list[Placed], changes: Sequence[Budget] = ()
) -> list[Record]:
    """What one uninterrupted run publishes: the pure jobs over each partition in offset
    order, then the budget `changes`."""
    jobs, now = StreamJobs(load_pricing(), budgets), shifted_now()
    out: list[Record] = []
    for partition in range(PARTITIONS):
        out += jobs.process(partition, ((o, v) for p, o, v in placed if p == partition), now)
    for budget in changes:
        out += jobs.set_budget(budget, now)
    assert not any(isinstance(r, BreakerTransition) for r in out), "breakers meant to stay closed"
    return out


def record_id(record: Record) -> str:
    assert isinstance(record, Alert | ControlMessage), record
    return record.alert_id if isinstance(record, Alert) else record.control_id


def describe(r: Record) -> str:
    what = f"{r.kind} {r.window} {r.details.get('threshold')}" if isinstance(r, Alert) else r.record
    return f"{what} {r.scope.key}"  # type: ignore[union-attr]


def last_positions(placed: list[Placed]) -> dict[str, Position]:
    return {orjson.loads(value)["tenant_id"]: (p, o) for p, o, value in placed}


async def produce(settings: Settings, messages: list[Message]) -> list[Placed]:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(settings.events_topic, v, key=k) for k, v in messages]
        metadata = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return [(m.partition, m.offset, v) for m, (_k, v) in zip(metadata, messages, strict=True)]
