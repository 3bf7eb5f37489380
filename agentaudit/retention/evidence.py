"""What `agentaudit verify` reads back about retention: the sweeps' claims, from the trail.

Only the `retention_applied` events' canonical payloads are read (never the retention_log
table, which anyone with SQL write access could edit), and a claim counts only when the trail
itself vouches for its row: its leaf hash, recomputed from its content, is the stored one, and
a checkpoint of its own chain that the deployment's keys signed covers its ``chain_seq``. That
chain is verified in the same run (same tenant), so a forged or edited claim fails there.
A claim after its chain's newest checkpoint (``pending``) does not count: before, deleting a
chain's first rows and appending a forged claim for them verified valid. So a sweep's cut is
reported ``missing rows`` until the next checkpoint covers its claim (one interval).

The sink signs whatever reaches the events topic, and anyone who can produce there can publish
a ``retention_applied`` event: so the claim itself carries the signature lines of a C2SP
signed note (``signature``) by the deployment's checkpoint key, under key name
``<deployment>/agentaudit/<tenant>/retention``, over :func:`claim_text`, made while that key
was in use; a claim without one does not count (`agentaudit.trail.system_signature`, the one
mechanism for every event agentaudit signs).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

import orjson

from agentaudit.store.protocol import Store
from agentaudit.store.protocol import column_text as _text
from agentaudit.system_events import AGENT_ID
from agentaudit.trail.checkpoint import note_size, origin_for
from agentaudit.trail.leaf import LeafError, encode_leaf
from agentaudit.trail.merkle import CompactTree, leaf_hash
from agentaudit.trail.note import Signer
from agentaudit.trail.pubkeys import PublicKeys
from agentaudit.trail.system_signature import (
    RETENTION_CLAIM,
    payload_signed,
    sign_payload,
    signed_text,
)
from agentaudit.trail.verdicts import Expiry, Found, Held, open_held

_SQL = f"""
SELECT tenant_id, kafka_partition, chain_seq, payload, toString(leaf_hash), cost_usd, priced,
       toString(pricing_version)
FROM agentaudit.events
WHERE type = 'retention_applied' AND agent_id = '{AGENT_ID}'
  AND ({{tenant:String}} = '' OR tenant_id = {{tenant:String}})
ORDER BY tenant_id, kafka_partition, chain_seq
SETTINGS readonly = 1"""

ChainNotes = Callable[[str, int], list[Found]]
"""(tenant, partition) -> the chain's checkpoint notes from every source."""


def expiries(
    store: Store, keys: PublicKeys, deployment: str, notes: ChainNotes, tenant: str = ""
) -> dict[tuple[str, int], list[Expiry]]:
    """Every chain's retention claims (chain = (tenant, partition)) that the trail vouches for
    (see the module docstring); a row that is no such claim is left to its chain's verdicts."""
    out: dict[tuple[str, int], list[Expiry]] = {}
    signed: dict[tuple[str, int], int] = {}
    for t, p, seq, payload, stored, cost, priced, version in store.query(
        _SQL, {"tenant": tenant}
    ).result_rows:
        t, p, seq = str(t), int(p), int(seq)
        body = payload if isinstance(payload, bytes) else str(payload).encode()
        try:
            leaf = leaf_hash(encode_leaf(t, p, seq, cost, bool(priced), str(version), body))
        except LeafError:
            continue
        stored = _text(stored).strip("\x00")
        if stored and stored != leaf.hex():
            continue
        if (t, p) not in signed:
            signed[(t, p)] = signed_size(notes(t, p), keys, origin_for(deployment, t, p))
        if seq > signed[(t, p)]:
            continue
        for p_claimed, claim in _claims(body, t, keys, deployment):
            out.setdefault((t, p_claimed), []).append(claim)
    return out


def claim_text(tenant: str, at: datetime, payload: Mapping[str, Any]) -> str:
    """The signed text of a claim (`agentaudit.trail.system_signature.signed_text`)."""
    return signed_text(RETENTION_CLAIM, tenant, at, payload)


def sign_claim(
    signer: Signer, deployment: str, tenant: str, at: datetime, payload: Mapping[str, Any]
) -> str:
    """The ``signature`` of a `retention_applied` payload (see the module docstring)."""
    return sign_payload(RETENTION_CLAIM, signer, deployment, tenant, at, payload)


def claim_signed(
    keys: PublicKeys, deployment: str, tenant: str, at: datetime, payload: Mapping[str, Any]
) -> bool:
    """Whether the payload's ``signature`` is the deployment's, over this claim, made while
    its key was in use."""
    return payload_signed(RETENTION_CLAIM, keys, deployment, tenant, at, payload)


def signed_size(found: Iterable[Found], keys: PublicKeys, origin: str) -> int:
    """The largest size of a checkpoint of ``origin`` among ``found`` that ``keys`` signed
    (the signature rules of `agentaudit verify`); 0 if none."""
    verifiers = keys.verifiers(origin)
    by_size = sorted(((note_size(f.note) or 0, f.note) for f in found), reverse=True)
    for _, note in by_size:  # largest first: usually the first one opens
        held = Held(note, frozenset(), None)
        open_held(held, keys, verifiers, origin)
        if held.cp is not None:
            return held.cp.size
    return 0


def _claims(
    body: bytes, tenant: str, keys: PublicKeys, deployment: str
) -> list[tuple[int, Expiry]]:
    """(partition, claim) of a signed `retention_applied` event of ``tenant``; none if it is
    not one (a typed column edited to look like one: the derived-value check names it) or its
    signature is not the deployment's."""
    try:
        doc = orjson.loads(body)
        if (doc["type"], doc["agent_id"], doc["tenant_id"]) != (
            "retention_applied",
            AGENT_ID,
            tenant,
        ):
            return []
        when = datetime.fromisoformat(doc["occurred_at"])
        d = doc["payload"]
        if not claim_signed(keys, deployment, tenant, when, d):
            return []
        at = when.timestamp()
        return [
            (int(p), Expiry(int(h), int(days), at, int(floor) or None))
            for p, h, days, floor in zip(
                d["partitions"], d["horizons"], d["horizon_days"], d["floors"], strict=True
            )
        ]
    except (ValueError, KeyError, TypeError):
        return []


def start_tree(found: Iterable[Found], size: int) -> CompactTree | None:
    """The tree at ``size`` from a stored frontier, for an export whose chain starts after an
    expired prefix (untrusted here: the bundle's verifier counts it only if, extended by the
    rows, it reproduces a signed root)."""
    for f in found:
        if f.frontier is not None and note_size(f.note) == size:
            try:
                return CompactTree(size, f.frontier)
            except ValueError:
                continue
    return None
