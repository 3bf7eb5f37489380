"""Verify throughput for `agentaudit bench` (issue 10): rows/s and CPU µs per row of the chain
verifier (`agentaudit.trail.audit`), on synthetic signed chains.

The rows are made first (leaf and chain hashes of every row, a checkpoint signed every
`every` rows), then fed to `ChainAudit.run` chunk by chunk as the store reader does; the time
spent building each chunk's row tuples is taken out of the figure, so it is the verifier's own
cost: recompute each leaf (leaf v1 + SHA-256), check the chain link, extend the compact tree,
check every checkpoint. `measure_store_read` times the other half, reading the same columns
from a store, for comparison.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from agentaudit.anchors import DirectoryAnchor
from agentaudit.settings import Settings
from agentaudit.sink.signing import ChainSigner
from agentaudit.sink.trees import ChainTrees
from agentaudit.store.protocol import Store
from agentaudit.trail.audit import ChainAudit
from agentaudit.trail.checkpoint import Checkpoint, origin_for, sign_checkpoint
from agentaudit.trail.leaf import encode_leaf
from agentaudit.trail.merkle import CompactTree
from agentaudit.trail.note import Signer
from agentaudit.trail.pubkeys import PublicKeys
from agentaudit.trail.verdicts import Found, Row
from agentaudit_sdk.clock import UtcNow, utc_now

# A realistic llm_call (priced with the shipped table), numbered per row: the typed columns
# re-derived from it and its re-priced cost agree with what is stored.
OCCURRED_AT = datetime(2026, 11, 6, 10, 0, 0, 123456, tzinfo=UTC)
"""Every row's `occurred_at` in `build_signed_store` (written into `_PAYLOAD`)."""
_PAYLOAD = (
    '{"agent_id":"support-bot","agent_version":"1.4.2","deployment":"prod","event_id":'
    '"0190c1f2-0000-7000-8000-%012d","occurred_at":"2026-11-06T10:00:00.123456Z","payload":'
    '{"latency_ms":812.5,"provider":"openai","request_model":"gpt-4o-mini","response_model":'
    '"gpt-4o-mini","status":"ok","usage":{"input_tokens":%d,"output_tokens":310}},'
    '"run_id":"run-%d","schema_version":1,"sdk":{"name":"agentaudit-python","version":"0.9.0"},'
    '"session_id":"s-1","span_id":"00f067aa0ba902b7","tenant_id":"%s","trace_id":'
    '"4bf92f3577b34da6a3ce929d0e0e4736","type":"llm_call","user_id":"u-%d"}'
)
_COST = Decimal("0.000366000")
_VERSION = "2031-05-01"
_CHUNK = 20_000


@dataclass(frozen=True)
class VerifyFigures:
    rows: int
    chains: int
    checkpoints: int
    wall_s: float
    cpu_s: float
    valid: bool

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.wall_s if self.wall_s else 0.0

    @property
    def cpu_us_per_row(self) -> float:
        return self.cpu_s * 1e6 / self.rows if self.rows else 0.0


class _Chain:
    """One synthetic chain: leaf and row hashes of every row, and its signed checkpoints."""

    def __init__(self, tenant: str, partition: int, n: int, every: int, signer: Signer) -> None:
        self.tenant, self.partition, self.n = tenant, partition, n
        self.origin = origin_for("bench.example", tenant, partition)
        self.leaf: list[bytes] = []
        self.row: list[bytes] = []
        named = signer.renamed(self.origin)
        tree, prev, notes = CompactTree(), "0" * 64, []
        for seq in range(1, n + 1):
            payload = self.payload(seq)
            lh = hashlib.sha256(
                b"\x00" + encode_leaf(tenant, partition, seq, _COST, True, _VERSION, payload)
            ).digest()
            rh = hashlib.sha256(prev.encode("ascii") + payload).digest()
            prev = rh.hex()
            self.leaf.append(lh)
            self.row.append(rh)
            tree.append_hash(lh)
            if seq % every == 0 or seq == n:
                cp = Checkpoint(self.origin, seq, tree.root(), (f"time {2_000_000_000 + seq}",))
                notes.append(sign_checkpoint(cp, [named]))
        self.notes = notes

    def payload(self, seq: int) -> bytes:
        return (_PAYLOAD % (seq, 1000 + seq % 977, seq // 50, self.tenant, seq % 1000)).encode()

    def chunks(self, spent: list[float]) -> Iterator[Row]:
        """The rows, built a chunk at a time; building time is added to ``spent[0]``."""
        for lo in range(1, self.n + 1, _CHUNK):
            t0 = time.process_time()
            chunk: list[Row] = []
            prev = "0" * 64 if lo == 1 else self.row[lo - 2].hex()
            for seq in range(lo, min(lo + _CHUNK, self.n + 1)):
                rh = self.row[seq - 1].hex()
                ingested = 2_000_000_000.0 + seq
                chunk.append(
                    (
                        seq,
                        self.payload(seq),
                        _COST,
                        True,
                        _VERSION,
                        prev,
                        rh,
                        self.leaf[seq - 1].hex(),
                        ingested,
                        True,
                        "",
                    )
                )
                prev = rh
            spent[0] += time.process_time() - t0
            yield from chunk


def measure_verify(rows: int = 1_000_000, chains: int = 4, every: int = 10_000) -> VerifyFigures:
    """Verify ``rows`` synthetic rows spread over ``chains`` chains (a checkpoint every
    ``every`` rows); CPU and wall time of the verifier alone."""
    signer = Signer("bench", bytes(range(32)))
    keys = PublicKeys.first(signer.public_key, datetime(2030, 1, 1, tzinfo=UTC))
    made = [_Chain(f"t{i}", i, rows // chains, every, signer) for i in range(chains)]
    spent = [0.0]
    wall = cpu = 0.0
    ok = True
    for c in made:
        found = [Found(n, frozenset({"store"})) for n in c.notes]
        w0, c0, s0 = time.perf_counter(), time.process_time(), spent[0]
        report = ChainAudit(c.origin, c.tenant, c.partition, keys, found).run(c.chunks(spent))
        building = spent[0] - s0
        wall += time.perf_counter() - w0 - building
        cpu += time.process_time() - c0 - building
        ok = ok and report.ok and report.rows_valid == c.n
    n = sum(c.n for c in made)
    return VerifyFigures(n, chains, sum(len(c.notes) for c in made), wall, cpu, ok)


if __name__ == "__main__":  # pragma: no cover (python -m agentaudit.bench.trail_measure)
    f = measure_verify()
    print(
        f"{f.rows} rows, {f.chains} chains, {f.checkpoints} checkpoints: "
        f"{f.wall_s:.2f} s wall, {f.rows_per_s:,.0f} rows/s, {f.cpu_us_per_row:.2f} µs CPU/row, "
        f"valid={f.valid}"
    )


def measure_store_verify(settings: Settings, store: Store) -> VerifyFigures:
    """`agentaudit verify` over a store the sink signed: read, typed columns re-derived, costs
    re-priced, every leaf and root recomputed. CPU of this process, which runs chDB too."""
    from agentaudit.verify.run import public_keys, verify_store

    w0, c0 = time.perf_counter(), time.process_time()
    reports = verify_store(settings, store, public_keys(settings))
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    rows = sum(r.rows + r.pending for r in reports)
    checkpoints = sum(r.checkpoints for r in reports)
    return VerifyFigures(rows, len(reports), checkpoints, wall, cpu, all(r.ok for r in reports))


@dataclass(frozen=True)
class CheckpointFigures:
    chains: int
    sign_cpu_s: float
    anchor_cpu_s: float
    wall_s: float


def measure_checkpoint_cost(chains: int, anchor_dir: Path) -> CheckpointFigures:
    """One interval's checkpoints of `chains` chains: signing (C2SP note, Ed25519) and the
    appends to the anchor directory, as a sink does every interval."""
    trees = ChainTrees()
    for i in range(chains):
        tree = CompactTree()
        for j in range(1 + i % 7):
            tree.append_hash(hashlib.sha256(f"{i}/{j}".encode()).digest())
        trees.trees[(f"tenant-{i}", i % 6)] = tree
    signer = ChainSigner(Signer.generate("bench"), "bench.example")
    anchor = DirectoryAnchor(anchor_dir)
    at = datetime(2031, 5, 6, tzinfo=UTC)
    signer.sign(trees, at)  # warm: the per-origin key names are made once per sink
    w0, c0 = time.perf_counter(), time.process_time()
    signed = signer.sign(trees, at)
    c1 = time.process_time()
    anchor.append((c.tenant_id, c.partition, c.note, c.signed_at) for c in signed)
    c2 = time.process_time()
    return CheckpointFigures(chains, c1 - c0, c2 - c1, time.perf_counter() - w0)


def build_signed_store(
    settings: Settings,
    store: Store,
    rows: int,
    chains: int,
    every: int = 10_000,
    signed_at: UtcNow = utc_now,
) -> int:
    """Fill an empty trail with `rows` rows over `chains` chains exactly as the sink stores
    them (chain link, leaf hash, priced cost, through the ingest view), with a checkpoint of
    every chain signed every `every` rows (at `signed_at()`) into the table and the anchor
    directory. Every row occurred at `OCCURRED_AT`. Returns the number of checkpoints signed."""
    from agentaudit.keyring import KeyRing
    from agentaudit.sink.chain import ChainHeads, Link
    from agentaudit.sink.rows import INGEST_COLUMNS, INGEST_TABLE, EventCost, Source, event_row
    from agentaudit.sink.signing import CHECKPOINT_COLUMNS, CHECKPOINT_TABLE
    from agentaudit.trail.leaf import ChainLeaves
    from agentaudit_schemas.payloads import Usage
    from agentaudit_schemas.pricing import current_pricing

    price = EventCost(current_pricing(""))  # the sink's pricing (no override file)
    at = OCCURRED_AT
    signer = ChainSigner(KeyRing.load(settings.key_dir).signer, settings.deployment)
    anchor = DirectoryAnchor(settings.checkpoints_dir)
    heads, trees, signed = ChainHeads(), ChainTrees(), 0
    keys = [(f"bench-{i}", i % settings.partitions) for i in range(chains)]
    leaves = {k: ChainLeaves(*k) for k in keys}
    per_chain = rows // chains
    for lo in range(0, per_chain, every):
        batch: list[tuple[object, ...]] = []
        for i, (tenant, part) in enumerate(keys):
            for n in range(lo, min(lo + every, per_chain)):
                tokens = 1000 + n + i * per_chain  # every row's usage differs, as in real traffic
                body = (_PAYLOAD % (n, tokens, n // 50, tenant, n % 1000)).encode()
                cost = price.llm_call(
                    "openai",
                    "gpt-4o-mini",
                    Usage.model_construct(
                        input_tokens=tokens,
                        output_tokens=310,
                        cached_input_tokens=0,
                        cache_write_tokens=0,
                    ),
                    at=at,
                    tenant=tenant,
                )
                link: Link = heads.append(tenant, part, body)
                leaf = leaves[(tenant, part)].hash(link.seq, *cost, body)
                batch.append(
                    event_row(
                        body, cost, link, Source(settings.events_topic, part, n, 0, None), leaf
                    )
                )
                trees.extend([(tenant, part, leaf)])
        store.insert(INGEST_TABLE, [list(c) for c in zip(*batch, strict=True)], INGEST_COLUMNS)
        made = signer.sign(trees, signed_at())
        anchor.append((c.tenant_id, c.partition, c.note, c.signed_at) for c in made)
        store.insert(
            CHECKPOINT_TABLE,
            [list(c) for c in zip(*(c.row for c in made), strict=True)],
            CHECKPOINT_COLUMNS,
        )
        signed += len(made)
    return signed
