"""What `agentaudit verify` reads back about retention: the sweeps' claims, from the trail.

Only the `retention_applied` events' canonical payloads are read (never the retention_log
table, which anyone with SQL write access could edit), and a claim counts only when the trail
itself vouches for its row: its leaf hash, recomputed from its content, is the stored one, and
a checkpoint of its own chain that the deployment's keys signed covers its ``chain_seq``. That
chain is verified in the same run (same tenant), so a forged or edited claim fails there.
A claim after its chain's newest checkpoint (``pending``) does not count: before, deleting a
chain's first rows and appending a forged claim for them verified valid. So a sweep's cut is
reported ``missing rows`` until the next checkpoint covers its claim (one interval).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime

import orjson

from agentaudit.store.protocol import Store
from agentaudit.store.protocol import column_text as _text
from agentaudit.system_events import AGENT_ID
from agentaudit.trail.audit import open_held
from agentaudit.trail.checkpoint import note_size, origin_for
from agentaudit.trail.leaf import LeafError, encode_leaf
from agentaudit.trail.merkle import CompactTree, leaf_hash
from agentaudit.trail.pubkeys import PublicKeys
from agentaudit.trail.verdicts import Expiry, Found, Held

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
        for p_claimed, claim in _claims(body, t):
            out.setdefault((t, p_claimed), []).append(claim)
    return out


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


def _claims(body: bytes, tenant: str) -> list[tuple[int, Expiry]]:
    """(partition, claim) of a `retention_applied` event of ``tenant``; none if it is not one
    (a typed column edited to look like one: the derived-value check names it)."""
    try:
        doc = orjson.loads(body)
        if (doc["type"], doc["agent_id"], doc["tenant_id"]) != (
            "retention_applied",
            AGENT_ID,
            tenant,
        ):
            return []
        at = datetime.fromisoformat(doc["occurred_at"]).timestamp()
        d = doc["payload"]
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
