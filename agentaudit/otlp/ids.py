"""Deterministic event ids for OTLP input: the same span always gives the same id.

The contract's `event_id` is a UUIDv7 (schemas/envelope.py: version 7, RFC variant). Here the
48-bit time field is the span's time in ms (so ids still sort by time) and the 74 random bits
come from SHA-256 over (tenant, trace id, span id, what the event is). A re-sent batch (an
exporter's retry after a timeout) thus carries the ids already stored, and the sink drops the
copies (`agentaudit.sink.dedup`). The tenant is part of the hash: two tenants' spans never share
an id even if their trace and span ids collide.

So the ids must be real: an all-zero trace or span id is OTLP's "none" (the spec's invalid id),
and every record carrying it would share one event id, all but the first dropped by the sink
as copies. `valid` tells them apart.
"""

from __future__ import annotations

import hashlib

_MS_MAX = (1 << 48) - 1


def valid(raw: bytes, size: int) -> bool:
    """A trace (16 bytes) or span (8 bytes) id that names something: right size, not all zero."""
    return len(raw) == size and any(raw)


def event_id(tenant: str, trace_id: str, span_id: str, kind: str, at_ms: int) -> str:
    """A UUIDv7-shaped id, a pure function of its arguments (`kind` tells apart the events one
    span gives, e.g. `run_started` and `run_finished`)."""
    digest = hashlib.sha256(f"{tenant}|{trace_id}|{span_id}|{kind}".encode()).digest()
    rand = int.from_bytes(digest[:10], "big")
    ms = min(max(at_ms, 0), _MS_MAX)
    value = (
        (ms << 80)
        | (0x7 << 76)
        | ((rand >> 62) & 0xFFF) << 64
        | (0b10 << 62)
        | (rand & ((1 << 62) - 1))
    )
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
