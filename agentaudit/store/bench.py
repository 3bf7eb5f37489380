"""Insert throughput of the embedded store: through its HTTP server vs chDB directly.

For `agentaudit bench` and the README's performance section; figures are measured, never
asserted. `python -m agentaudit.store.bench [rows] [runs]` prints them.
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from agentaudit.settings import Settings
from agentaudit.store import open_store
from agentaudit.store.migrations import migrate

EVENT_TYPES = ("llm_call", "tool_call", "policy_decision", "run_started", "run_finished")


def events_like(
    rows: int, seed: int = 7, payload_bytes: int = 500
) -> tuple[list[list[Any]], list[str]]:
    """Column-oriented rows for every column of `agentaudit.events`, payload ~`payload_bytes`."""
    rnd = random.Random(seed)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    hexes = [rnd.randbytes(32).hex() for _ in range(1024)]
    filler = "x" * payload_bytes
    spec: dict[str, Any] = {
        "event_id": lambda i: uuid.UUID(int=rnd.getrandbits(128)),
        "schema_version": lambda i: 1,
        "type": lambda i: EVENT_TYPES[i % len(EVENT_TYPES)],
        "occurred_at": lambda i: start + timedelta(microseconds=i * 1000),
        "ingested_at": lambda i: start + timedelta(microseconds=i * 1000 + 5),
        "sdk_name": lambda i: "agentaudit-py",
        "sdk_version": lambda i: "0.1.0",
        "tenant_id": lambda i: f"tenant-{i % 20}",
        "user_id": lambda i: f"user-{i % 500}",
        "agent_id": lambda i: f"agent-{i % 10}",
        "agent_version": lambda i: "1.4.2",
        "deployment": lambda i: "prod",
        "variant": lambda i: "a",
        "session_id": lambda i: f"s-{i // 50}",
        "run_id": lambda i: f"r-{i // 10}",
        "trace_id": lambda i: hexes[i % 1024][:32],
        "span_id": lambda i: hexes[i % 1024][:16],
        "parent_span_id": lambda i: "",
        "status": lambda i: "ok",
        "error_type": lambda i: "",
        "provider": lambda i: "openai",
        "request_model": lambda i: "gpt-4o",
        "response_model": lambda i: "gpt-4o-2024-08-06",
        "input_tokens": lambda i: rnd.randrange(10_000),
        "output_tokens": lambda i: rnd.randrange(2_000),
        "cached_input_tokens": lambda i: 0,
        "cache_write_tokens": lambda i: 0,
        "reasoning_tokens": lambda i: 0,
        "latency_ms": lambda i: rnd.random() * 3000,
        "tool": lambda i: "",
        "decision": lambda i: "",
        "stop_reason": lambda i: "",
        "provider_cost_usd": lambda i: None if i % 3 else Decimal("0.001234567"),
        "cost_usd": lambda i: Decimal(rnd.randrange(10**9)) / Decimal(10**9),
        "pricing_version": lambda i: "2026-01",
        "payload": lambda i: (f'{{"i":{i},"f":"' + filler + '"}').encode(),
        "kafka_topic": lambda i: "agentaudit.events.v1",
        "kafka_partition": lambda i: i % 6,
        "kafka_offset": lambda i: i,
        "chain_seq": lambda i: i,
        "prev_hash": lambda i: hexes[(i + 1) % 1024],
        "row_hash": lambda i: hexes[(i + 2) % 1024],
    }
    names = list(spec)
    return [[spec[name](i) for i in range(rows)] for name in names], names


def measure(rows: int = 50_000, runs: int = 3) -> dict[str, float]:
    """Best-of-`runs` rows/s for one INSERT of `rows` events-shaped rows, by path:

    - http: `Store.insert` through the owner's HTTP server (Python encoding included),
    - encode: clickhouse-connect's Native encoding alone,
    - chdb: chDB `send_insert` of the already encoded bytes (the engine alone),
    - in_process: encode then `send_insert` in one thread (what skipping HTTP would give).
    """
    columns, names = events_like(rows)
    best = dict.fromkeys(("http", "encode", "chdb", "in_process"), float("inf"))

    def timed(key: str, fn: Any) -> Any:
        t = time.perf_counter()
        out = fn()
        best[key] = min(best[key], time.perf_counter() - t)
        return out

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp))
        with open_store(settings) as store, _second_session(settings.store_dir) as session:
            migrate(store)
            _run(store, session, columns, names, runs, timed)
    return {"rows": rows} | {f"{key}_rows_per_s": rows / seconds for key, seconds in best.items()}


def _run(
    store: Any, session: Any, columns: list[list[Any]], names: list[str], runs: int, timed: Any
) -> None:
    statement = f"INSERT INTO agentaudit.events ({', '.join(names)})"

    def encode() -> bytes:
        return bytes(store.encode("agentaudit.events", columns, names))

    def send(native: bytes) -> None:
        inserter = session.send_insert(statement, "Native")
        inserter.append(native)
        inserter.finish()

    for _ in range(runs):
        timed("http", lambda: store.insert("agentaudit.events", columns, names))
        native = timed("encode", encode)
        timed("chdb", lambda native=native: send(native))
        timed("in_process", lambda: send(encode()))


@contextmanager
def _second_session(store_dir: Path) -> Iterator[Any]:
    """Another chDB session on the engine this process already runs (same directory is allowed)."""
    import chdb.session  # here: `events_like` serves tests in processes that must not load chDB

    session = chdb.session.Session(str(store_dir))
    try:
        yield session
    finally:
        session.close()


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]]
    for key, value in measure(*args).items():
        print(f"{key:>24}: {value:,.1f}")
