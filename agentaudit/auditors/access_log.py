"""The access log as read back: every `auditor_query` entry, each marked genuine or forged.

The gate (`agentaudit.auditors.gate`) signs every entry it writes with the deployment's
checkpoint key (`agentaudit.trail.system_signature`, purpose ``access-log``). Anyone who can
produce to the events topic can also publish an `auditor_query` event, which the sink chains
and checkpoints like the gate's own, and the `agentaudit.auditor_queries` view (plain SQL, which
cannot check an Ed25519 signature) shows it like any other. So this reader checks each entry's
signature and shows every entry, the forged ones flagged, never hidden: an auditor must see
that someone wrote into the log. A genuine entry written again (same signed payload and time,
another event id) is flagged as a replay.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from agentaudit.store.protocol import Store
from agentaudit.trail.pubkeys import PublicKeys
from agentaudit.trail.system_signature import ACCESS_LOG, payload_signed

GENUINE = "genuine"
UNSIGNED = "FORGED: unsigned"
BAD_SIGNATURE = "FORGED: signature not the deployment's"
REPLAYED = "FORGED: replay of an earlier entry"

_SQL = """
SELECT tenant_id, event_id, payload
FROM agentaudit.events
WHERE type = 'auditor_query' AND ({tenant:String} = '' OR tenant_id = {tenant:String})
ORDER BY tenant_id, occurred_at, kafka_partition, chain_seq
SETTINGS readonly = 1"""


@dataclass(frozen=True)
class LogEntry:
    """One `auditor_query` event of a tenant's trail and whether the gate wrote it."""

    tenant_id: str
    event_id: str
    occurred_at: str
    auditor: str
    channel: str
    verdict: str
    statement: str
    result_rows: int
    status: str  # GENUINE or one of the FORGED reasons

    @property
    def genuine(self) -> bool:
        """Whether the gate wrote this entry."""
        return self.status == GENUINE


def access_log(store: Store, keys: PublicKeys, deployment: str, tenant: str = "") -> list[LogEntry]:
    """Every `auditor_query` entry of ``tenant`` (all tenants if empty), oldest first per
    tenant, each with its status (see the module docstring)."""
    out: list[LogEntry] = []
    seen: set[tuple[str, str]] = set()  # (tenant, signature) of the genuine entries so far
    for t, event_id, body in store.query(_SQL, {"tenant": tenant}).result_rows:
        doc = _document(body)
        p: dict[str, Any] = doc.get("payload") if isinstance(doc.get("payload"), dict) else {}  # type: ignore[assignment]
        status = _status(keys, deployment, str(t), doc, p)
        if status == GENUINE:
            sig = (str(t), str(p.get("signature")))
            status = REPLAYED if sig in seen else GENUINE
            seen.add(sig)
        out.append(
            LogEntry(
                str(t),
                str(event_id),
                str(doc.get("occurred_at", "")),
                str(p.get("auditor", "")),
                str(p.get("channel", "")),
                str(p.get("verdict", "")),
                str(p.get("statement", "")),
                _int(p.get("result_rows")),
                status,
            )
        )
    return out


def _status(
    keys: PublicKeys, deployment: str, tenant: str, doc: dict[str, Any], p: dict[str, Any]
) -> str:
    if not isinstance(p.get("signature"), str):
        return UNSIGNED
    try:
        at = datetime.fromisoformat(str(doc["occurred_at"]))
    except (KeyError, ValueError):
        return BAD_SIGNATURE
    # The stored document's own tenant is the one signed for (the row's column could be edited).
    if doc.get("tenant_id") != tenant or not payload_signed(
        ACCESS_LOG, keys, deployment, tenant, at, p
    ):
        return BAD_SIGNATURE
    return GENUINE


def _document(body: Any) -> dict[str, Any]:
    try:
        doc = orjson.loads(body if isinstance(body, bytes | str) else str(body))
    except orjson.JSONDecodeError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
