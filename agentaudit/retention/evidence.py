"""What `agentaudit verify` reads back about retention: the sweeps' claims, from the trail.

Only the `retention_applied` events' canonical payloads are read (never the retention_log
table, which anyone with SQL write access could edit); each event's own row is verified with
its chain like any other, so a forged or edited claim fails there.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import orjson

from agentaudit.store.protocol import Store
from agentaudit.system_events import AGENT_ID
from agentaudit.trail.checkpoint import note_size
from agentaudit.trail.merkle import CompactTree
from agentaudit.trail.verdicts import Expiry, Found

_SQL = f"""
SELECT payload FROM agentaudit.events
WHERE type = 'retention_applied' AND agent_id = '{AGENT_ID}'
  AND ({{tenant:String}} = '' OR tenant_id = {{tenant:String}})
SETTINGS readonly = 1"""


def expiries(store: Store, tenant: str = "") -> dict[tuple[str, int], list[Expiry]]:
    """Every chain's retention claims (chain = (tenant, partition))."""
    out: dict[tuple[str, int], list[Expiry]] = {}
    for (payload,) in store.query(_SQL, {"tenant": tenant}).result_rows:
        doc = orjson.loads(payload)
        at = datetime.fromisoformat(doc["occurred_at"]).timestamp()
        d = doc["payload"]
        for p, h, days, floor in zip(
            d["partitions"], d["horizons"], d["horizon_days"], d["floors"], strict=True
        ):
            claim = Expiry(int(h), int(days), at, int(floor) or None)
            out.setdefault((doc["tenant_id"], int(p)), []).append(claim)
    return out


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
