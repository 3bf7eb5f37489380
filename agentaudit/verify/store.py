"""Read chains from the store for the verifier: rows in chunks, checkpoints from both sources.

Every statement here is a fixed SELECT run with ``readonly = 1`` (the same fence as
`agentaudit query`, `agentaudit.sqlguard.Limits`), through `open_store(settings)`: the worker
serves the store while it runs, and the verifier reads it alongside.

Rows come in ``chain_seq`` order, ``CHUNK`` at a time by keyset (``chain_seq > last ... LIMIT n
WITH TIES``, so duplicates of one seq never straddle two chunks). A ``--from/--to`` window on
``occurred_at`` marks rows *checked*; the others still feed the tree from their stored
``leaf_hash`` (their payload is not even fetched unless the leaf hash is empty).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from agentaudit.anchors import DirectoryAnchor
from agentaudit.sqlguard import Limits
from agentaudit.store.protocol import Store
from agentaudit.trail.verdicts import Found, Row
from agentaudit.verify.derived import PRICING_COLUMNS, DerivedCheck

CHUNK = 50_000
_FAR_PAST = datetime(1970, 1, 1, tzinfo=UTC)
_FAR_FUTURE = datetime(2299, 12, 31, tzinfo=UTC)
# Reads are bounded by the chunk size, not by a row limit: the fence keeps readonly and memory.
_FENCE = Limits(max_seconds=300.0, max_rows=10 * CHUNK).clause()

_CHAINS_SQL = f"""
SELECT tenant_id, kafka_partition FROM agentaudit.events
WHERE ({{tenant:String}} = '' OR tenant_id = {{tenant:String}}) GROUP BY tenant_id, kafka_partition
UNION DISTINCT
SELECT tenant_id, kafka_partition FROM agentaudit.checkpoints
WHERE ({{tenant:String}} = '' OR tenant_id = {{tenant:String}}) GROUP BY tenant_id, kafka_partition
{_FENCE}"""

_CHECKPOINTS_SQL = f"""
SELECT note, frontier FROM agentaudit.checkpoints
WHERE tenant_id = {{tenant:String}} AND kafka_partition = {{partition:UInt32}}
ORDER BY tree_size, signed_at
{_FENCE}"""

_ROWS_SQL = f"""
SELECT chain_seq,
       occurred_at >= {{lo:DateTime64(6, 'UTC')}} AND occurred_at < {{hi:DateTime64(6, 'UTC')}}
         AS checked,
       if(checked OR empty(leaf_hash), payload, '') AS body, cost_usd, priced, pricing_version,
       prev_hash, row_hash, if(empty(leaf_hash), '', leaf_hash) AS leaf,
       toUnixTimestamp64Micro(ingested_at) AS ingested_us, kafka_offset, log_epoch,
       {", ".join(PRICING_COLUMNS)}
FROM agentaudit.events
WHERE tenant_id = {{tenant:String}} AND kafka_partition = {{partition:UInt32}}
  AND chain_seq > {{after:UInt64}}
ORDER BY chain_seq LIMIT {CHUNK} WITH TIES
{_FENCE}"""


@dataclass(frozen=True)
class Window:
    """Which rows are reported: ``occurred_at`` in [start, end)."""

    start: datetime = _FAR_PAST
    end: datetime = _FAR_FUTURE

    @property
    def everything(self) -> bool:
        return self.start == _FAR_PAST and self.end == _FAR_FUTURE


def _text(v: Any) -> str:
    return v.decode("ascii", "replace") if isinstance(v, bytes) else str(v)


def chains(store: Store, anchor: DirectoryAnchor, tenant: str = "") -> list[tuple[str, int]]:
    """Every chain with rows or checkpoints in the store, or notes in the anchor dir."""
    found = {(str(t), int(p)) for t, p in store.query(_CHAINS_SQL, {"tenant": tenant}).result_rows}
    found |= {c for c in anchor.chains() if not tenant or c[0] == tenant}
    return sorted(found)


def checkpoints(store: Store, anchor: DirectoryAnchor, tenant: str, partition: int) -> list[Found]:
    """The chain's notes from the table (with frontiers) and from the anchor directory."""
    params = {"tenant": tenant, "partition": partition}
    out = [
        Found(_text(note), frozenset({"store"}), _frontier(frontier))
        for note, frontier in store.query(_CHECKPOINTS_SQL, params).result_rows
    ]
    out += [Found(n, frozenset({"anchor"})) for n in anchor.notes(tenant, partition)]
    return out


def _frontier(hexes: Any) -> tuple[bytes, ...] | None:
    try:
        return tuple(bytes.fromhex(_text(h)) for h in hexes)
    except ValueError:
        return None  # a garbled frontier is just not used (it is never trusted anyway)


def rows(
    store: Store, tenant: str, partition: int, window: Window, derived: DerivedCheck | None
) -> Iterator[Row]:
    """The chain's rows in ``chain_seq`` order as :data:`Row` tuples, chunk by chunk; with
    ``derived``, each checked row names the stored values that disagree with its payload."""
    after = 0
    params: dict[str, Any] = {"tenant": tenant, "partition": partition, "lo": window.start,
                              "hi": window.end}  # fmt: skip
    while True:
        params["after"] = after
        # FixedString hashes decoded to str by the driver (cheaper than per value here).
        formats = {"body": "bytes", "prev_hash": "string", "row_hash": "string", "leaf": "string"}
        result = store.query(_ROWS_SQL, params, column_formats=formats)  # type: ignore[call-arg]
        chunk = result.result_rows
        if not chunk:
            return
        for seq, checked, body, cost, priced, version, prev, row_hash, leaf, ing, off, ep, *pricing in chunk:
            cost, priced, version = Decimal(cost), bool(priced), str(version)
            d = ""
            if checked and derived is not None:
                key = (tenant, partition, int(seq), int(off), int(ep))
                d = derived.disagreeing(key, cost, priced, version, tuple(pricing))
            yield (int(seq), body, cost, priced, version, _text(prev),
                   _text(row_hash), _text(leaf).strip("\x00"), ing / 1e6, bool(checked), d)  # fmt: skip
        after = int(chunk[-1][0])
