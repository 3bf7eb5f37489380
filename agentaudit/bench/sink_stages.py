"""CPU per event of each stage of the sink process's hot path, on real SDK-shaped events.

`measure_sink_stages(n, repeats)` returns µs of CPU (`time.process_time`) per event, the
minimum over `repeats`, per stage: each stage runs alone over the same `n` events with its
inputs prepared outside the timing (`source`: building the message's `Source`, as the
worker does per message), and `add` is the whole `SinkProcessor.add` + `take`
(every stage together, as the sink runs them); `total` adds the chains' trees growing by
the batch's leaves after the store took it. The stages overlap nothing and leave out the
processor's own bookkeeping, so their sum is a little below `add`.

`python -m agentaudit.bench.sink_stages [events] [repeats] [stage,stage…]` prints the table.
"""

from __future__ import annotations

import copy
import gc
import random
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from agentaudit.bench.workload import payloads
from agentaudit.gc_tuning import THRESHOLDS
from agentaudit.sink.chain import ChainHeads
from agentaudit.sink.dedup import RecentIds
from agentaudit.sink.plain_validator import plain_event
from agentaudit.sink.processor import SinkProcessor
from agentaudit.sink.rows import EventCost, Source, event_row
from agentaudit.sink.trees import ChainTrees
from agentaudit.subjects.keystore import SubjectKeyStore
from agentaudit.subjects.seal import Sealer
from agentaudit.trail.leaf import ChainLeaves
from agentaudit_schemas.canonical import canonical_timestamp, document_bytes
from agentaudit_schemas.events import parse_event
from agentaudit_schemas.json_keys import repeated_key
from agentaudit_schemas.pricing import load_pricing

STAGES = (
    "source",
    "decode",
    "duplicate_key",
    "skew",
    "canonical",
    "seal",
    "price",
    "dedup",
    "chain",
    "leaf",
    "rows",
    "tree",
    "add",
    "total",
)
"""Keys of `measure_sink_stages`'s result, in pipeline order (`add` and `total` are wholes)."""

START = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
PARTITIONS = 6


def _event_id(rng: random.Random, ms: int) -> str:
    """A UUIDv7-shaped id from `rng` (deterministic, unlike the SDK's)."""
    r = rng.getrandbits(74)
    variant = 0x8 | (r >> 72)
    return (
        f"{ms >> 16:08x}-{ms & 0xFFFF:04x}-7{(r >> 60) & 0xFFF:03x}-"
        f"{variant:x}{(r >> 48) & 0xFFF:03x}-{r & 0xFFFFFFFFFFFF:012x}"
    )


def sdk_events(n: int, seed: int = 1) -> list[tuple[Source, bytes]]:
    """`n` (source, wire bytes) pairs as the SDK writes them (`model_dump_json(exclude_none)`)
    from the bench workload: context ids, a parent span, a few attributes, keyed by tenant,
    spread over `PARTITIONS` partitions, record timestamps 5 ms after `occurred_at`."""
    rng = random.Random(seed)
    out: list[tuple[Source, bytes]] = []
    for i, (tenant, kind, payload) in enumerate(payloads(n, seed)):
        at = START + timedelta(microseconds=i * 997)
        ms = int(at.timestamp() * 1000)
        doc: dict[str, Any] = {
            "event_id": _event_id(rng, ms),
            "type": kind,
            "occurred_at": at,
            "sdk": {"name": "agentaudit-py", "version": "0.1.0"},
            "tenant_id": tenant,
            "user_id": f"user-{rng.randrange(500)}",
            "agent_id": "support-bot",
            "agent_version": "1.4.2",
            "session_id": f"s-{i // 50}",
            "run_id": f"r-{i // 10}",
            "trace_id": f"{rng.getrandbits(128):032x}",
            "span_id": f"{rng.getrandbits(64):016x}",
            "parent_span_id": f"{rng.getrandbits(64):016x}",
            "attributes": {"region": "eu-west-1", "retry": rng.randrange(3)},
            "payload": payload,
        }
        wire = parse_event(orjson.dumps(doc)).model_dump_json(exclude_none=True).encode()
        partition = sum(tenant.encode()) % PARTITIONS  # stable, unlike hash()
        out.append((Source("agentaudit.events.v1", partition, i, ms + 5, tenant.encode()), wire))
    return out


def _cpu(fn: Callable[[], object], repeats: int, n: int) -> float:
    """Minimum CPU µs per event of `fn` (which handles `n` events) over `repeats` runs."""
    best = float("inf")
    for _ in range(repeats):
        gc.collect()
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best / n * 1e6


def measure_sink_stages(
    n: int = 20_000, repeats: int = 5, seed: int = 1, only: tuple[str, ...] = STAGES
) -> dict[str, float]:
    """µs of CPU per event of each of `STAGES` (or `only` those), min of `repeats`, over `n`
    SDK events."""
    events = sdk_events(n, seed)
    pricing = load_pricing()
    values = [v for _, v in events]
    plain = [plain_event(v) for v in values]
    occurred = [p.document["occurred_at"] for p in plain]
    documents = []
    for p, at in zip(plain, occurred, strict=True):
        p.document["occurred_at"] = canonical_timestamp(at)
        documents.append(p.document)
    canon = [document_bytes(d) for d in documents]
    cost = EventCost(pricing)
    costs = [cost.of_document(d, at) for d, at in zip(documents, occurred, strict=True)]
    limits = [s.timestamp_ms + 900_000.0 for s, _ in events]

    def chain() -> list[Any]:
        heads = ChainHeads()
        return [
            heads.append(d["tenant_id"], s.partition, c)
            for (s, _), d, c in zip(events, documents, canon, strict=True)
        ]

    links = chain()
    leaves_by: dict[tuple[str, int], ChainLeaves] = {}

    def leaf() -> list[bytes]:
        leaves_by.clear()  # each run builds the chains' hashers, as a new processor does
        out = []
        for (s, _), d, c, link, p in zip(events, documents, canon, links, costs, strict=True):
            key = (d["tenant_id"], s.partition)
            hasher = leaves_by.get(key)
            if hasher is None:
                hasher = leaves_by[key] = ChainLeaves(*key)
            out.append(hasher.hash(link.seq, *p, c))
        return out

    leaf_hashes = leaf()
    tree_input = [
        (d["tenant_id"], s.partition, h)
        for (s, _), d, h in zip(events, documents, leaf_hashes, strict=True)
    ]

    # Content encryption is on by default (AGENTAUDIT_CONTENT_ENCRYPTION): the bench seals too,
    # with a throwaway key store. The bench events' attributes are content: every one is sealed.
    keys = tempfile.TemporaryDirectory(prefix="agentaudit-stages-")
    sealer = Sealer(SubjectKeyStore(Path(keys.name) / "subjects", Path(keys.name) / "kek"))
    # Sealing changes the documents: each repeat seals fresh copies (made only when asked).
    fresh = [copy.deepcopy(documents) for _ in range(repeats if "seal" in only else 0)]

    def seal() -> list[bytes]:
        return [sealer(d, c) for d, c in zip(fresh.pop(), canon, strict=True)]

    def whole(with_tree: bool) -> None:
        processor = SinkProcessor(pricing, dedup_capacity=100_000, clock=lambda: START, seal=sealer)
        for source, value in events:
            processor.add(source, value)
        batch = processor.take()
        assert len(batch.events) == n, "every bench event must be accepted"
        if with_tree:
            ChainTrees().extend(batch.leaves)

    stages: dict[str, Callable[[], object]] = {
        "source": lambda: [
            Source(s.topic, s.partition, s.offset, s.timestamp_ms, s.key, s.log_epoch)
            for s, _ in events
        ],
        "decode": lambda: [plain_event(v) for v in values],
        "duplicate_key": lambda: [
            repeated_key(v, p.keys) for v, p in zip(values, plain, strict=True)
        ],
        "skew": lambda: [
            at.timestamp() * 1000 > lim for at, lim in zip(occurred, limits, strict=True)
        ],
        "canonical": lambda: [
            (canonical_timestamp(at), document_bytes(d))
            for d, at in zip(documents, occurred, strict=True)
        ],
        "price": lambda: [
            cost.of_document(d, at) for d, at in zip(documents, occurred, strict=True)
        ],
        "dedup": lambda: [
            recent.add(d["event_id"]) for recent in [RecentIds(100_000)] for d in documents
        ],
        "chain": chain,
        "seal": seal,
        "leaf": leaf,
        "rows": lambda: [
            event_row(c, p, link, s, h)
            for (s, _), c, p, link, h in zip(events, canon, costs, links, leaf_hashes, strict=True)
        ],
        "tree": lambda: ChainTrees().extend(tree_input),
        "add": lambda: whole(False),
        "total": lambda: whole(True),
    }
    # As in a sink process (`agentaudit.gc_tuning`): its thresholds decide how often the
    # collector walks the batch's young objects.
    thresholds = gc.get_threshold()
    gc.set_threshold(*THRESHOLDS)
    try:
        return {name: _cpu(stages[name], repeats, n) for name in STAGES if name in only}
    finally:
        gc.set_threshold(*thresholds)
        keys.cleanup()


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    only = tuple(sys.argv[3].split(",")) if len(sys.argv) > 3 else STAGES
    for name, us in measure_sink_stages(n, repeats, only=only).items():
        print(f"{name:14} {us:7.2f} µs/event")


if __name__ == "__main__":
    main()
