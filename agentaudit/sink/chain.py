"""Hash chains: gap-free `chain_seq` and `row_hash = SHA-256(prev_hash ‖ canonical)`.

A chain is (tenant_id, source partition) of the events topic. Why not one chain per tenant:
a chain needs exactly one sequencer, and the only thing Kafka guarantees one owner at a
time is a partition (a consumer group assigns each partition to one member). Keys are the
producers' business: librdkafka's default partitioner (CRC32) and aiokafka's (murmur2) put
the same tenant key on different partitions, null keys are spread round-robin, and a key
may disagree with the body's `tenant_id`. A per-tenant chain extended by two sink processes
then forks (duplicate `chain_seq`, broken links). Per (tenant, partition) it cannot: a tenant
whose events arrive on several partitions has several chains, each gap-free and verifiable
on its own (`ORDER BY tenant_id, kafka_partition, chain_seq`). A chain continues across log
epochs of its partition (`agentaudit.sink.logguard`). Heads are recovered per assigned
partition on every assignment (`agentaudit.sink.recovery`).
"""

from __future__ import annotations

from typing import NamedTuple

from agentaudit_schemas.canonical import GENESIS_HASH, chain_hash

ChainKey = tuple[str, int]
"""(tenant_id, kafka_partition)."""


class Link(NamedTuple):
    """One row's place in its chain (a named tuple: one is built per event)."""

    seq: int
    prev_hash: str
    row_hash: str


_START = (0, GENESIS_HASH)


class ChainHeads:
    """The latest (seq, hash) of every chain this worker extends."""

    def __init__(self) -> None:
        self._heads: dict[ChainKey, tuple[int, str]] = {}

    def load(self, heads: dict[ChainKey, tuple[int, str]]) -> None:
        """Replace the known heads with those recovered from the store."""
        self._heads = dict(heads)

    def append(self, tenant_id: str, partition: int, canonical: bytes) -> Link:
        """Extend the (tenant, partition) chain by one row and return its link."""
        return self.extend((tenant_id, partition), canonical)

    def extend(self, key: ChainKey, canonical: bytes) -> Link:
        """`append` for a chain key the caller already holds (the sink's hot path)."""
        seq, prev = self._heads.get(key, _START)
        seq += 1
        row_hash = chain_hash(prev, canonical)
        self._heads[key] = (seq, row_hash)
        return Link(seq, prev, row_hash)

    def head(self, tenant_id: str, partition: int) -> tuple[int, str]:
        return self._heads.get((tenant_id, partition), (0, GENESIS_HASH))
