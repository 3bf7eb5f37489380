"""Events the pipeline writes about itself into the trail: who read it, policy changes, erasures.

They are ordinary trace events (validated by the same models, keyed by tenant on the events
topic), so the sink chains, signs and stores them like any agent's event and `agentaudit
verify` covers them. The agent fields say who wrote them: ``agent_id`` ``agentaudit``, the
acting person or auditor as ``user_id``.

`publish` returns only once the broker acknowledged every event; it raises otherwise. Callers
that must not act unrecorded (an auditor's query, an erasure) publish first and act after.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson
from uuid_utils import uuid7

from agentaudit import __version__
from agentaudit.settings import Settings
from agentaudit.trail.note import Signer
from agentaudit_schemas.canonical import canonical_bytes
from agentaudit_schemas.events import parse_event
from agentaudit_sdk.clock import UtcNow, utc_now

AGENT_ID = "agentaudit"
"""``agent_id`` of every event the pipeline writes about itself."""


def system_event(
    type_: str,
    tenant_id: str,
    payload: Mapping[str, Any],
    *,
    user_id: str | None = None,
    now: UtcNow = utc_now,
) -> dict[str, Any]:
    """One validated event (as its JSON document) written by agentaudit itself.

    Raises `pydantic.ValidationError` when the payload breaks the contract: a bug of the caller,
    not input to dead-letter."""
    at: datetime = now()
    doc: dict[str, Any] = {
        "event_id": str(uuid7()),
        "type": type_,
        "occurred_at": at.isoformat().replace("+00:00", "Z"),
        "sdk": {"name": "agentaudit", "version": __version__},
        "tenant_id": tenant_id,
        "agent_id": AGENT_ID,
        "agent_version": __version__,
        "trace_id": secrets.token_hex(16),
        "span_id": secrets.token_hex(8),
        "payload": dict(payload),
    }
    if user_id is not None:
        doc["user_id"] = user_id
    parse_event(orjson.dumps(doc))
    return doc


def signed_event(
    settings: Settings,
    type_: str,
    tenant_id: str,
    payload: Mapping[str, Any],
    *,
    user_id: str | None = None,
    now: UtcNow = utc_now,
) -> dict[str, Any]:
    """`system_event` with its payload signed by the deployment's checkpoint key (read from
    ``settings.key_dir`` now: `KeyMissing` without one), so a reader can tell it from one that
    another producer of the events topic wrote (`agentaudit.trail.system_signature`)."""
    from agentaudit.keyring import KeyRing

    signer = KeyRing.load(settings.key_dir).signer
    doc = system_event(type_, tenant_id, payload, user_id=user_id, now=now)
    return sign_event(doc, signer, settings.deployment)


def sign_event(doc: dict[str, Any], signer: Signer, deployment: str) -> dict[str, Any]:
    """``doc`` (a `system_event`) with its payload replaced by the payload as the sink will
    store it (its canonical form, as JSON) plus its ``signature``: signed over what readers
    get back, so a field the contract normalises cannot turn a genuine event into a forged
    one."""
    from agentaudit.trail.system_signature import KINDS, sign_payload

    event = parse_event(orjson.dumps(doc))
    stored: dict[str, Any] = orjson.loads(canonical_bytes(event))
    payload = stored["payload"]
    tenant = str(doc["tenant_id"])
    payload["signature"] = sign_payload(
        KINDS[str(doc["type"])], signer, deployment, tenant, event.occurred_at, payload
    )
    return {**doc, "payload": payload}


def publish(settings: Settings, events: Sequence[dict[str, Any]], timeout: float = 15.0) -> None:
    """Send ``events`` to the events topic (key: tenant) and wait for every acknowledgement.

    Raises `BrokerUnreachable` or `UserError` (nothing is certain to be published then)."""
    from agentaudit.control_plane import produce

    records = [(str(e["tenant_id"]), orjson.dumps(e)) for e in events]
    asyncio.run(produce(settings, settings.events_topic, records, timeout))


async def apublish(
    settings: Settings, events: Sequence[dict[str, Any]], timeout: float = 15.0
) -> None:
    """`publish` for callers already inside an event loop."""
    from agentaudit.control_plane import produce

    records = [(str(e["tenant_id"]), orjson.dumps(e)) for e in events]
    await produce(settings, settings.events_topic, records, timeout)
