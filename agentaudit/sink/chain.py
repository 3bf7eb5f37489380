"""Per-tenant hash chains: gap-free `chain_seq` and `row_hash = SHA-256(prev_hash ‖ canonical)`.

Events are keyed by tenant, so one consumer owns a tenant's chain at a time; on start and
rebalance its head is recovered from the store (`ChainHeads.load`).
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.canonical import GENESIS_HASH, chain_hash


@dataclass(frozen=True, slots=True)
class Link:
    seq: int
    prev_hash: str
    row_hash: str


class ChainHeads:
    """The latest (seq, hash) of every tenant chain this worker extends."""

    def __init__(self) -> None:
        self._heads: dict[str, tuple[int, str]] = {}

    def load(self, heads: dict[str, tuple[int, str]]) -> None:
        """Replace the known heads with those recovered from the store."""
        self._heads = dict(heads)

    def append(self, tenant_id: str, canonical: bytes) -> Link:
        """Extend the tenant's chain by one row and return its link."""
        seq, prev = self._heads.get(tenant_id, (0, GENESIS_HASH))
        link = Link(seq + 1, prev, chain_hash(prev, canonical))
        self._heads[tenant_id] = (link.seq, link.row_hash)
        return link

    def head(self, tenant_id: str) -> tuple[int, str]:
        return self._heads.get(tenant_id, (0, GENESIS_HASH))
