"""Map accepted events and dead letters to rows of the sink's two inserts.

Events go to `agentaudit.events_ingest` (migration 0003): a Null table whose materialized
view fills `agentaudit.events`, deriving every typed column (type, tenant, tokens, status, …)
from the canonical payload inside ClickHouse. So the sink sends only what the payload does
not hold: the computed cost, the Kafka source and the chain link. Column names here are the
single source of truth for the inserts; the DDL lives in `schemas/clickhouse/migrations`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple

from agentaudit.sink.chain import Link
from agentaudit_schemas.envelope import Envelope
from agentaudit_schemas.payloads import TokenCounts, UsageCounts
from agentaudit_schemas.pricing import Pricing
from agentaudit_schemas.pricing.model import ZERO_USD

INGEST_TABLE = "agentaudit.events_ingest"
INGEST_COLUMNS: tuple[str, ...] = (
    "payload",
    "cost_usd",
    "priced",
    "pricing_version",
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
    "log_epoch",
    "chain_seq",
    "prev_hash",
    "row_hash",
    "leaf_hash",
    "content_digest",
)

DEAD_LETTER_COLUMNS: tuple[str, ...] = (
    "received_at",
    "source_topic",
    "kafka_partition",
    "kafka_offset",
    "log_epoch",
    "kafka_timestamp",
    "kafka_key",
    "reason",
    "detail",
    "tenant_id",
    "event_id",
    "original",
    "kafka_headers",
)


class Source(NamedTuple):
    """Where a message came from in Kafka. A named tuple, not a frozen dataclass: one is built
    per consumed message, and a frozen dataclass costs three times as much to build."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    log_epoch: int = 0
    """Which log of the partition (+1 each time the sink found it replaced, migration 0011)."""
    headers: Sequence[tuple[str, bytes | None]] = ()
    """The record's Kafka headers, in order: kept with a dead letter (migration 0024) so it can
    be replayed as it came."""


Priced = tuple[Decimal, bool, str]
"""(cost_usd, priced, pricing_version) of one event."""


class EventCost:
    """The pipeline's cost of an event: `llm_call`s are priced; other events cost nothing.

    An `llm_call` of a model the table does not know costs 0 with `priced` False: reported as
    unpriced, never as free.
    """

    def __init__(self, pricing: Pricing) -> None:
        self.pricing = pricing
        self._free: Priced = (ZERO_USD, True, "")
        self._unpriced: Priced = (ZERO_USD, False, pricing.version)

    def __call__(self, event: Envelope) -> Priced:
        if event.type != "llm_call":  # type: ignore[attr-defined]
            return self._free
        p: Any = event.payload  # type: ignore[attr-defined]
        return self.llm_call(
            p.provider,
            p.response_model or p.request_model,
            p.usage,
            at=event.occurred_at,
            tenant=event.tenant_id,
        )

    def of_document(self, document: dict[str, Any], occurred_at: datetime) -> Priced:
        """`self(event)` for the event's plain document (`agentaudit.sink.decode.Accepted`):
        the sink's hot path, which builds no model per event."""
        if document["type"] != "llm_call":
            return self._free
        p = document["payload"]
        return self.llm_call(
            p["provider"],
            p.get("response_model") or p["request_model"],
            TokenCounts(**p["usage"]),
            at=occurred_at,
            tenant=document["tenant_id"],
        )

    def llm_call(
        self,
        provider: str,
        model: str,
        usage: UsageCounts,
        *,
        at: datetime | None = None,
        tenant: str = "",
    ) -> Priced:
        """The cost of one `llm_call` of `model` (the response's model, else the request's)
        by `tenant` at `at` (its `occurred_at`: the price then in force)."""
        usd = self.pricing.total(provider, model, usage, at=at, tenant=tenant)
        return self._unpriced if usd is None else (usd, True, self.pricing.version)


def event_row(
    canonical: bytes,
    cost: Priced,
    link: Link,
    source: Source,
    leaf_hash: bytes,
    content_digest: int = 0,
) -> tuple[Any, ...]:
    """One `events_ingest` row, in `INGEST_COLUMNS` order. `content_digest`: of the event as
    sent (`agentaudit.sink.dedup.ContentDigest`), 0 when unknown."""
    topic, partition, offset, _, _, log_epoch, _ = source  # one unpack, not 4 attribute reads
    return (
        canonical,
        *cost,
        topic,
        partition,
        offset,
        log_epoch,
        *link,
        leaf_hash.hex(),
        content_digest,
    )


KAFKA_TS_MIN_MS = -2_208_988_800_000  # 1900-01-01T00:00:00Z
KAFKA_TS_MAX_MS = 10_413_791_999_999  # 2299-12-31T23:59:59.999Z
"""A dead letter's `kafka_timestamp` is kept in ClickHouse's DateTime64 range: the producer
sets the Kafka timestamp, the broker takes any int64, and Python's datetime ends at year 9999."""


def anchor_time(timestamp_ms: int) -> int | None:
    """A stored dead letter's `kafka_timestamp` (ms) as a log anchor's time: None when it is a
    clamp (`dead_letter_row`), not the record's own, which cannot tell a replaced log."""
    clamped = min(abs(timestamp_ms - KAFKA_TS_MIN_MS), abs(timestamp_ms - KAFKA_TS_MAX_MS)) <= 1
    return None if clamped else timestamp_ms


def dead_letter_row(
    source: Source,
    reason: str,
    detail: str,
    original: bytes | None,
    received_at: datetime,
    tenant_hint: str,
    event_id_hint: str,
) -> tuple[Any, ...]:
    """One `dead_letters` row, in `DEAD_LETTER_COLUMNS` order, with the record's headers (a
    null value stored as ''). A Kafka timestamp past the
    storable range is clamped to it and named in `detail` (building the row raised on it
    before, and the sink stopped on that message again after every restart)."""
    ts = source.timestamp_ms
    if not KAFKA_TS_MIN_MS <= ts <= KAFKA_TS_MAX_MS:
        kept = min(max(ts, KAFKA_TS_MIN_MS), KAFKA_TS_MAX_MS)
        detail += f"; kafka timestamp {ts} ms out of range, stored as {kept}"
        ts = kept
    return (
        received_at,
        source.topic,
        source.partition,
        source.offset,
        source.log_epoch,
        datetime.fromtimestamp(ts / 1000, tz=received_at.tzinfo),
        source.key or b"",
        reason,
        detail,
        tenant_hint,
        event_id_hint,
        original or b"",
        [(name, value or b"") for name, value in source.headers],
    )
