"""The canonical byte form of an event: what is stored whole and what the hash chain covers.

Canonical form = UTF-8 JSON of the validated model with keys sorted at every level, no
insignificant whitespace, absent optional fields omitted (so adding an optional field in a
later schema version does not change the bytes of earlier events), timestamps in UTC with
microseconds (`2026-11-21T10:00:00.123456Z`). This is the JCS (RFC 8785) shape, so an
auditor can re-derive it in any language.
"""

from __future__ import annotations

import hashlib

import orjson
from pydantic import BaseModel

GENESIS_HASH = "0" * 64
"""`prev_hash` of the first event in a tenant's chain."""


def canonical_bytes(event: BaseModel) -> bytes:
    """Serialise a validated event to its canonical bytes."""
    return orjson.dumps(
        event.model_dump(mode="python", exclude_none=True),
        option=orjson.OPT_SORT_KEYS | orjson.OPT_UTC_Z,
    )


def chain_hash(prev_hash: str, canonical: bytes) -> str:
    """`row_hash = SHA-256(prev_hash ‖ canonical bytes)`, hex; `prev_hash` is the previous row's hex hash."""
    return hashlib.sha256(prev_hash.encode("ascii") + canonical).hexdigest()
