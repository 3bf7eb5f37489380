"""Map accepted events and dead letters to rows of the `events` and `dead_letters` tables.

Column names here are the single source of truth for the sink's inserts; the DDL lives in
`schemas/clickhouse/migrations`. Typed columns are filled per event type ('' or 0 where a
type has no such field) so dashboards filter without parsing `payload`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from agentaudit.sink.chain import Link
from schemas.envelope import Envelope
from schemas.pricing import PricingTable

EVENT_COLUMNS: tuple[str, ...] = (
    "event_id", "schema_version", "type", "occurred_at", "ingested_at", "sdk_name", "sdk_version",
    "tenant_id", "user_id", "agent_id", "agent_version", "deployment", "variant", "session_id",
    "run_id", "trace_id", "span_id", "parent_span_id", "status", "error_type", "provider",
    "request_model", "response_model", "input_tokens", "output_tokens", "cached_input_tokens",
    "cache_write_tokens", "reasoning_tokens", "latency_ms", "tool", "decision", "stop_reason",
    "provider_cost_usd", "cost_usd", "priced", "pricing_version", "payload", "kafka_topic", "kafka_partition",
    "kafka_offset", "chain_seq", "prev_hash", "row_hash",
)  # fmt: skip

DEAD_LETTER_COLUMNS: tuple[str, ...] = (
    "received_at", "source_topic", "kafka_partition", "kafka_offset", "kafka_timestamp",
    "kafka_key", "reason", "detail", "tenant_id", "event_id", "original",
)  # fmt: skip

_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Source:
    """Where a message came from in Kafka."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None


def _typed_fields(event: Envelope, pricing: PricingTable) -> tuple[Any, ...]:
    """(status, error_type, provider, request_model, response_model, 5 token counts, latency_ms,
    tool, decision, stop_reason, provider_cost_usd, cost_usd, priced, pricing_version) for one event.
    Events that carry no usage cost nothing and count as priced."""
    p: Any = event.payload  # type: ignore[attr-defined]
    kind = event.type  # type: ignore[attr-defined]
    if kind == "llm_call":
        u = p.usage
        cost = pricing.cost(p.provider, p.response_model or p.request_model, u)
        provider_cost = None if p.provider_cost_usd is None else Decimal(repr(p.provider_cost_usd))
        return (p.status.value, p.error_type or "", p.provider, p.request_model, p.response_model or "",
                u.input_tokens, u.output_tokens, u.cached_input_tokens, u.cache_write_tokens,
                u.reasoning_tokens, p.latency_ms, "", "", "", provider_cost, cost.usd, cost.priced,
                cost.pricing_version)  # fmt: skip
    status = error_type = tool = decision = stop_reason = ""
    latency = 0.0
    if kind == "tool_call":
        status, error_type, tool, latency = p.status.value, p.error_type or "", p.tool, p.latency_ms
    elif kind == "policy_decision":
        decision = p.decision.value
    elif kind == "approval_decided":
        status, latency = p.outcome.value, p.latency_ms
    elif kind == "guardrail_triggered":
        decision = p.action.value
    elif kind == "run_finished":
        stop_reason, latency = p.stop_reason.value, p.duration_ms
    elif kind == "error":
        error_type = p.error_type
    return (status, error_type, "", "", "", 0, 0, 0, 0, 0, latency, tool, decision, stop_reason,
            None, _ZERO, True, "")  # fmt: skip


def event_row(
    event: Envelope, canonical: bytes, link: Link, source: Source, ingested_at: datetime,
    pricing: PricingTable,
) -> tuple[Any, ...]:
    """One `events` row, in `EVENT_COLUMNS` order."""
    e = event
    return (
        e.event_id, e.schema_version, e.type, e.occurred_at, ingested_at,  # type: ignore[attr-defined]
        e.sdk.name, e.sdk.version, e.tenant_id, e.user_id or "", e.agent_id, e.agent_version,
        e.deployment, e.variant or "", e.session_id or "", e.run_id or "", e.trace_id, e.span_id,
        e.parent_span_id or "",
        *_typed_fields(e, pricing),
        canonical, source.topic, source.partition, source.offset,
        link.seq, link.prev_hash, link.row_hash,
    )


def dead_letter_row(
    source: Source, reason: str, detail: str, original: bytes | None, received_at: datetime,
    tenant_hint: str, event_id_hint: str,
) -> tuple[Any, ...]:
    """One `dead_letters` row, in `DEAD_LETTER_COLUMNS` order."""
    return (
        received_at, source.topic, source.partition, source.offset,
        datetime.fromtimestamp(source.timestamp_ms / 1000, tz=received_at.tzinfo),
        source.key or b"", reason, detail, tenant_hint, event_id_hint, original or b"",
    )
