"""The events agentaudit writes about itself, as read back: each marked genuine or forged.

Every such event type (`agentaudit.trail.system_signature.KINDS`: the access log, retention
policy changes, legal holds, retention claims, erasures) is signed by its writer with the
deployment's checkpoint key. Anyone who can produce to the events topic can also publish one,
which the sink chains and checkpoints like the pipeline's own and SQL views show alike (plain
SQL cannot check an Ed25519 signature). So this reader checks each event's signature and lists
every one, the forged ones flagged, never hidden: an auditor must see that someone wrote into
the trail in agentaudit's name. A genuine event published again (same signed payload and time,
another event id) is flagged as a replay.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from agentaudit.store.protocol import Store
from agentaudit.trail.pubkeys import PublicKeys
from agentaudit.trail.system_signature import KINDS, payload_signed

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
GENUINE = "genuine"
UNSIGNED = "FORGED: unsigned"
BAD_SIGNATURE = "FORGED: signature not the deployment's"
REPLAYED = "FORGED: replay of an earlier entry"

_SQL = """
SELECT tenant_id, event_id, type, payload
FROM agentaudit.events
WHERE has({types:Array(String)}, type) AND ({tenant:String} = '' OR tenant_id = {tenant:String})
  AND occurred_at >= {since:DateTime64(6, 'UTC')}
ORDER BY tenant_id, occurred_at, kafka_partition, chain_seq
SETTINGS readonly = 1"""


@dataclass(frozen=True)
class SystemEntry:
    """One stored event of a type only agentaudit writes, and whether agentaudit wrote it."""

    tenant_id: str
    event_id: str
    type: str
    occurred_at: str
    user_id: str
    status: str  # GENUINE or one of the FORGED reasons
    payload: dict[str, Any] = field(default_factory=dict)

    @property
    def genuine(self) -> bool:
        """Whether agentaudit wrote this event."""
        return self.status == GENUINE


def system_log(
    store: Store,
    keys: PublicKeys,
    deployment: str,
    types: Sequence[str] = tuple(KINDS),
    tenant: str = "",
    since: datetime = _EPOCH,
) -> list[SystemEntry]:
    """Every stored event of ``types`` of ``tenant`` (all tenants if empty), oldest first per
    tenant, each with its status (see the module docstring); ``since``: only those dated from
    then on (a replay of an earlier one then looks genuine)."""
    out: list[SystemEntry] = []
    seen: set[tuple[str, str, str]] = set()  # (tenant, type, signature) of genuine ones so far
    params = {"types": list(types), "tenant": tenant, "since": since}
    rows = store.query(_SQL, params).result_rows
    for t, event_id, type_, body in rows:
        doc = _document(body)
        p = doc.get("payload")
        payload: dict[str, Any] = p if isinstance(p, dict) else {}
        status = _status(keys, deployment, str(t), str(type_), doc, payload)
        if status == GENUINE:
            key = (str(t), str(type_), str(payload.get("signature")))
            status = REPLAYED if key in seen else GENUINE
            seen.add(key)
        at, user = doc.get("occurred_at", ""), doc.get("user_id", "")
        out.append(
            SystemEntry(str(t), str(event_id), str(type_), str(at), str(user), status, payload)
        )
    return out


def _status(
    keys: PublicKeys,
    deployment: str,
    tenant: str,
    type_: str,
    doc: dict[str, Any],
    payload: dict[str, Any],
) -> str:
    if not isinstance(payload.get("signature"), str):
        return UNSIGNED
    try:
        at = datetime.fromisoformat(str(doc["occurred_at"]))
    except (KeyError, ValueError):
        return BAD_SIGNATURE
    # The stored document's own tenant and type are the ones signed for (the row's typed
    # columns could be edited; the derived-value check of verify names that).
    if (doc.get("tenant_id"), doc.get("type")) != (tenant, type_) or not payload_signed(
        KINDS[type_], keys, deployment, tenant, at, payload
    ):
        return BAD_SIGNATURE
    return GENUINE


def _document(body: Any) -> dict[str, Any]:
    try:
        doc = orjson.loads(body if isinstance(body, bytes | str) else str(body))
    except orjson.JSONDecodeError:
        return {}
    return doc if isinstance(doc, dict) else {}
