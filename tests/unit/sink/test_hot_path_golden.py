"""The sink's output pinned byte for byte: every row, chain hash, leaf, tree root and dead letter.

The digests below were computed from the code before the hot path was reworked (issue 14,
commit 00b71c2) and must never change: a faster `SinkProcessor` that stores one byte
differently, links a chain differently or gives a dead letter another reason or detail fails
here. Inputs are deterministic: the bench's SDK-shaped events, one event of every type with
every optional field, edge values (offsets, explicit nulls, integer floats, unicode), re-sent
duplicates, and the malformed-input corpus with its ids and clocks fixed.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import random
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

import tests.factories
import tests.faults.corpus
from agentaudit.bench.sink_stages import sdk_events
from agentaudit.demo.malformed import MALFORMED
from agentaudit.sink.decode import Accepted, decode
from agentaudit.sink.dedup import ContentDigest
from agentaudit.sink.processor import SinkProcessor
from agentaudit.sink.rows import Source
from agentaudit.sink.trees import ChainTrees
from agentaudit_schemas.pricing import load_pricing
from tests.unit.schemas.examples import PAYLOADS, event

FIXED = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
STAMP_MS = 1_795_255_200_000  # 2026-11-21T10:00:00Z, the examples' time
TOPIC = "agentaudit.events.v1"

GOLDEN = {
    "bench": "6b199402ad2aa7505c6a76456516f425ad446add85a005d4a97d2561ee2f5756",
    "types": "3b0122e48a5cf0018f8dbc11b9948bd4978dfbb823a103dab7ab32b9bc2ca358",
    "edges": "278c609b70f6a5bf4f19f54ed85e6be161bed078e2375b69b23a7b01f1aaa908",
    # Re-pinned once: a float attribute's upper bound became `lt=2**63` (it admitted 2**63),
    # which changes one dead letter's detail (float_attribute_1e300: "less than or equal to
    # 9223372036854776000" -> "less than 9223372036854776000"); every verdict is the same.
    # Re-pinned again (corpus, malformed): the event type tail_accepted was added, and a dead
    # letter of an unknown type lists the expected tags. With it left out of the TraceEvent
    # union (its class kept) both digests were the ones before: nothing else changed.
    "corpus": "b9745bdc90501226075de85bc78c6fb3fb61f5d695ee423caa45aa78d4d0da1c",
    "malformed": "db1a6bf06472dc09a2f640ff3670e1c55134fee0d096d8dc14facddf1343343d",
    "random": "478a1add2dad79b3aa5d9f000aabf30af46551c63b1c8e13709e0dbb34556385",
}

LATER_TYPES = ("tail_accepted",)
"""Event types added after the pin: not among the inputs (the events of every type, the random
mix), so those digests keep pinning the types they were computed over."""
PINNED = [t for t in PAYLOADS if t not in LATER_TYPES]

LATER_COUNTERS = ("events_stored", "dead_letters_stored")
"""Counters added after the pin, advanced when the store acknowledges a batch (never here)."""
LATER_COLUMNS = 1
"""Event row columns added after the pin, at the end: `content_digest` (migration 0023),
checked against its definition instead (unsealed here: of the stored payload itself)."""
LATER_DEAD_LETTER_COLUMNS = 1
"""Dead-letter row columns added after the pin, at the end: `kafka_headers` (migration 0024),
empty here (no source record has headers)."""


def _digest(processor: SinkProcessor, verdicts: list[Any]) -> str:
    """SHA-256 over everything the processor hands on, in order."""
    batch = processor.take()
    digest = ContentDigest()
    assert [row[-1] for row in batch.events] == [digest(row[0]) for row in batch.events]
    assert all(row[-1] == [] for row in batch.dead_letters)
    trees = ChainTrees()
    trees.extend(batch.leaves)
    doc = {
        "events": [row[:-LATER_COLUMNS] for row in batch.events],
        "leaves": batch.leaves,
        "occurred_at": [t.isoformat() for t in batch.occurred_at],
        "dead_letters": [row[:-LATER_DEAD_LETTER_COLUMNS] for row in batch.dead_letters],
        "dlq": [(r.key, r.value, r.headers) for r in batch.dlq],
        "ranges": sorted(batch.ranges.items()),
        "high": [sorted(batch.event_high.items()), sorted(batch.dead_letter_high.items())],
        "counters": {k: v for k, v in vars(processor.counters).items() if k not in LATER_COUNTERS},
        "heads": sorted(processor.chains._heads.items()),  # noqa: SLF001 - the pin needs them
        "roots": sorted((k, t.size, t.root()) for k, t in trees.trees.items()),
        "verdicts": verdicts,
    }
    raw = orjson.dumps(doc, default=_plain, option=orjson.OPT_PASSTHROUGH_DATETIME)
    return hashlib.sha256(raw).hexdigest()


def _plain(value: object) -> object:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)  # Decimal


def _run(messages: list[tuple[Source, bytes | None]]) -> str:
    processor = SinkProcessor(load_pricing(), dedup_capacity=1000, clock=lambda: FIXED)
    verdicts = []
    for source, value in messages:
        processor.add(source, value)
        v = decode(value, source.timestamp_ms + 900_000.0)
        if isinstance(v, Accepted):
            verdicts.append(["ok", v.canonical])
        else:
            verdicts.append([v.reason.value, v.detail])
    return _digest(processor, verdicts)


def _sources(values: list[bytes | None], key: bytes = b"acme") -> list[tuple[Source, bytes | None]]:
    return [
        (Source(TOPIC, i % 3, i, STAMP_MS + 5, key, log_epoch=i % 2), v)
        for i, v in enumerate(values)
    ]


def _id(i: int) -> str:
    return f"01937b2e-5c4a-7d3e-9f10-{i:012x}"


def _full(type_: str, i: int) -> dict[str, Any]:
    """One event of `type_` with every optional envelope field set."""
    return event(
        type_,
        event_id=_id(i),
        user_id="user-7",
        variant="b",
        session_id="s-1",
        run_id="r-1",
        parent_span_id="11" * 8,
        deployment="staging",
        attributes={"k": "v", "n": -(2**63), "f": 1.5e-7, "b": True, "m": 2**63 - 1},
    )


def test_bench_events() -> None:
    assert _run([(s, v) for s, v in sdk_events(600, seed=3)]) == GOLDEN["bench"]


def test_every_type_with_every_optional_field() -> None:
    values = [orjson.dumps(event(t, event_id=_id(i))) for i, t in enumerate(PINNED)]
    values += [orjson.dumps(_full(t, 100 + i)) for i, t in enumerate(PINNED)]
    assert _run(_sources(values)) == GOLDEN["types"]


def _edges() -> list[bytes]:
    llm = _full("llm_call", 200)
    llm["payload"] = {
        **llm["payload"],
        "response_model": "gpt-5-mini-2025-08-07",
        "usage": {
            "input_tokens": 1200,
            "output_tokens": 300,
            "cached_input_tokens": 100,
            "cache_write_tokens": 50,
            "reasoning_tokens": 20,
        },
        "latency_ms": 812,  # a JSON integer for a float field
        "ttft_ms": 0.1,
        "finish_reason": "stop",
        "status": "error",
        "error_type": "RateLimit",
        "provider_cost_usd": 0.000123,
        "content": {"handling": "plain", "prompt": 'héllo \u2028 "quoted" ☃', "response": ""},
    }
    nulls = event("llm_call", event_id=_id(201), user_id=None, variant=None, run_id=None)
    nulls["payload"] = {**nulls["payload"], "response_model": None, "content": None}
    out = [orjson.dumps(llm), orjson.dumps(nulls)]
    for i, stamp in enumerate(
        (
            "2026-11-21T11:00:00.5+01:00",
            "2026-11-21T04:30:00-05:30",
            "2026-11-21T10:00:00Z",
            "2026-11-21T10:00:00.000001+00:00",
            "2000-01-01T00:00:00Z",
        )
    ):
        out.append(orjson.dumps(event("tool_call", event_id=_id(210 + i), occurred_at=stamp)))
    unknown = event("llm_call", event_id=_id(220))
    unknown["payload"] = {**unknown["payload"], "provider": "nobody", "request_model": "m-1"}
    out.append(orjson.dumps(unknown))
    out.append(
        b' {\n "event_id" : "%s" ,' % _id(221).encode()
        + orjson.dumps({k: v for k, v in event("error").items() if k != "event_id"})[1:]
    )
    return out


def test_edge_values_duplicates_and_resends() -> None:
    values = _edges()
    resent = [values[0], values[2]]  # the same event_id again: duplicates, not rows
    assert _run(_sources(values + resent)) == GOLDEN["edges"]


def _random_events(n: int, seed: int) -> list[bytes]:
    """Seeded random events: optional fields present, null or absent, odd floats and text."""
    rng = random.Random(seed)
    floats = [0.0, -0.0, 1e-300, 5e-324, 0.1, 1 / 3, 123456789.125, 86_400_000.0, 7]
    texts = ["", "a", 'ü\u00e9\u2028\t"\\', "\U0001f600" * 3, "x" * 300]
    out = []
    for i in range(n):
        kind = rng.choice(sorted(PINNED))
        doc = _full(kind, 1000 + i) if rng.random() < 0.5 else event(kind, event_id=_id(1000 + i))
        for name in ("user_id", "variant", "session_id", "run_id", "parent_span_id"):
            roll = rng.random()
            if roll < 0.2:
                doc[name] = None
            elif roll < 0.4:
                doc.pop(name, None)
        doc["attributes"] = {
            f"k{j}": rng.choice([rng.choice(floats), rng.randrange(-(2**63), 2**63), True, "v"])
            for j in range(rng.randrange(4))
        }
        p = doc["payload"]
        if kind == "llm_call":
            p["latency_ms"] = rng.choice(floats)
            p["content"] = rng.choice(
                [None, {"handling": "plain", "prompt": rng.choice(texts), "response": None}]
            )
            p["provider_cost_usd"] = rng.choice([None, rng.choice(floats)])
        elif kind == "eval_result":
            p["score"] = rng.choice([*floats, -1.5e300])
        elif kind == "error":
            p["message"] = rng.choice([None, *texts])
        out.append(orjson.dumps(doc))
    return out


def test_random_events() -> None:
    assert _run(_sources(_random_events(300, seed=11))) == GOLDEN["random"]


def test_malformed_corpus(monkeypatch: pytest.MonkeyPatch) -> None:
    ids = itertools.count(1)

    class _Ids:
        @staticmethod
        def uuid7() -> str:
            return f"01937b2e-5c4a-7d3e-9f10-{next(ids):012x}"

    class _Clock(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
            return datetime(2026, 11, 21, 10, 0, tzinfo=tz)

    monkeypatch.setattr(tests.factories, "uuid_utils", _Ids)
    monkeypatch.setattr(tests.factories, "datetime", _Clock)
    monkeypatch.setattr(tests.faults.corpus, "time", SimpleNamespace(time=lambda: STAMP_MS / 1000))
    cases = [
        c
        for c in tests.faults.corpus.cases()
        if not c.big and c.name not in tests.faults.corpus.ADDED
    ]
    messages = [
        (Source(TOPIC, 0, i, c.timestamp_ms or STAMP_MS + 5, c.key), c.value)
        for i, c in enumerate(cases)
    ]
    assert _run(messages) == GOLDEN["corpus"]


def test_malformed_samples() -> None:
    messages = [
        (Source(TOPIC, 1, i, STAMP_MS, key), copy.copy(value))
        for i, (key, value, _) in enumerate(MALFORMED)
    ]
    assert _run(messages) == GOLDEN["malformed"]
