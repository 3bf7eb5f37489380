"""Read chains from the store for the verifier: rows in chunks, checkpoints from both sources.

Every statement here is a fixed SELECT run with ``readonly = 1`` (the same fence as
`agentaudit query`, `agentaudit.sqlguard.Limits`), through `open_store(settings)`: the worker
serves the store while it runs, and the verifier reads it alongside.

Rows come in ``chain_seq`` order, by ranges of ``CHUNK`` sequence numbers (duplicates of one
seq fall in one range; a range past a gap is just short). A ``--from/--to`` window on
``occurred_at`` marks rows *checked*; the others still feed the tree from their stored
``leaf_hash`` (their payload is not even fetched unless the leaf hash is empty). The engine
checks each row's hashes and link; a block of rows that pass comes as one row and a `Run`,
without payloads; the rest come whole for the verifier to judge (`_ROWS_SQL`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from agentaudit.anchors import DirectoryAnchor
from agentaudit.sqlguard import Limits
from agentaudit.store.protocol import Store
from agentaudit.store.protocol import column_text as _text
from agentaudit.trail.checkpoint import CheckpointError, origin_for
from agentaudit.trail.leaf import LEAF_VERSION
from agentaudit.trail.pubkeys import PublicKeys
from agentaudit.trail.verdicts import Found, Held, Row, Run, open_held

CHUNK = 50_000
_FAR_PAST = datetime(1970, 1, 1, tzinfo=UTC)
_FAR_FUTURE = datetime(2299, 12, 31, tzinfo=UTC)
# Reads are bounded by the chunk size, not by a row limit: the fence keeps readonly and memory.
_FENCE = Limits(max_seconds=300.0, max_rows=10 * CHUNK).clause()

_CHAINS_SQL = f"""
SELECT tenant_id, kafka_partition, max(last) FROM (
  SELECT tenant_id, kafka_partition, max(chain_seq) AS last FROM agentaudit.events
  WHERE ({{tenant:String}} = '' OR tenant_id = {{tenant:String}})
  GROUP BY tenant_id, kafka_partition
  UNION ALL
  SELECT tenant_id, kafka_partition, toUInt64(0) FROM agentaudit.checkpoints
  WHERE ({{tenant:String}} = '' OR tenant_id = {{tenant:String}})
  GROUP BY tenant_id, kafka_partition
) GROUP BY tenant_id, kafka_partition
{_FENCE}"""

# A partition's newest sink checkpoints, of any chain (`partition_newest`).
_NEWEST_SQL = f"""
SELECT tenant_id, note FROM agentaudit.checkpoints
WHERE kafka_partition = {{partition:UInt32}} AND NOT is_end
ORDER BY signed_at DESC LIMIT 50
{_FENCE}"""

_CHECKPOINTS_SQL = f"""
SELECT tenant_id, kafka_partition, note, frontier FROM agentaudit.checkpoints
WHERE (tenant_id, kafka_partition) IN {{chains:Array(Tuple(String, UInt32))}}
ORDER BY tenant_id, kafka_partition, tree_size, signed_at
{_FENCE}"""


def _field(x: str) -> str:
    """SQL of leaf v1's ``field(x)``: uint32 big-endian length, then the bytes."""
    return f"concat(reverse(reinterpretAsFixedString(toUInt32(length({x})))), {x})"


# The row's leaf v1 (agentaudit/trail/leaf.py) built by ClickHouse from the stored columns.
_LEAF_SQL = (
    f"concat(char(0), {_field(repr(LEAF_VERSION.decode()))}, {_field('tenant_id')}, "
    "reverse(reinterpretAsFixedString(toUInt32(4))), "
    "reverse(reinterpretAsFixedString(toUInt32(kafka_partition))), "
    "reverse(reinterpretAsFixedString(toUInt32(8))), "
    "reverse(reinterpretAsFixedString(toUInt64(chain_seq))), "
    f"{_field('toDecimalString(cost_usd, 9)')}, {_field('if(priced, char(1), char(0))')}, "
    f"{_field('toString(pricing_version)')}, {_field('payload')})"
)

# `engine_ok`: ClickHouse recomputed the row's leaf and row hash from its stored bytes and
# both equal the stored ones, the row links to the one before it, and no other row has its
# chain_seq. Such a row is sent without payload and cost (the verifier uses its leaf hash; the
# tree and the signed roots still check it); every other checked row comes whole and is judged
# in Python. A block of such rows becomes one `Row` and a `Run` (`_chunk_rows`). Columns are
# typed as the verifier wants them (bool, str, float), so a chunk becomes rows by slicing, not
# by a conversion per value. (Not sending the hashes of rows inside a block needs a second
# window over `engine_ok`: measured, it cost more than it saved.)


def _rows_sql(where: str, chain: str) -> str:
    """Rows matching ``where``, with `engine_ok` judged within each chain (``chain``: the
    window's PARTITION BY, empty for one chain), in chain and ``chain_seq`` order."""
    return f"""
SELECT tenant_id, kafka_partition, chain_seq,
       toBool(occurred_at >= {{lo:DateTime64(6, 'UTC')}}
              AND occurred_at < {{hi:DateTime64(6, 'UTC')}}) AS checked,
       NOT empty(leaf_hash)
         AND lower(hex(SHA256({_LEAF_SQL}))) = leaf_hash
         AND lower(hex(SHA256(concat(prev_hash, payload)))) = row_hash
         AND toString(prev_hash) = lagInFrame(toString(row_hash), 1, '') OVER w
         AND chain_seq = lagInFrame(chain_seq, 1, 0) OVER w + 1
         AND chain_seq != leadInFrame(chain_seq, 1, 0) OVER w
         AS engine_ok,
       (checked AND NOT engine_ok) OR empty(leaf_hash) AS whole,
       if(checked AND engine_ok, NULL, if(whole, payload, '')) AS body,
       if(whole, toDecimalString(cost_usd, 9), '') AS cost,
       priced, toString(pricing_version) AS version, toString(prev_hash), toString(row_hash),
       if(empty(leaf_hash), '', toString(leaf_hash)) AS leaf,
       toUnixTimestamp64Micro(ingested_at) / 1e6 AS ingested
FROM agentaudit.events
WHERE {where}
WINDOW w AS ({chain} ORDER BY chain_seq ROWS BETWEEN 1 PRECEDING AND 1 FOLLOWING)
ORDER BY tenant_id, kafka_partition, chain_seq
{_FENCE}"""


_ROWS_SQL = _rows_sql(
    "tenant_id = {tenant:String} AND kafka_partition = {partition:UInt32} "
    f"AND chain_seq > {{after:UInt64}} AND chain_seq <= {{after:UInt64}} + {CHUNK}",
    "",
)
# Small chains (every row within the first chunk), several per query: per-query costs (~10 ms
# each) dominate a chain of a few thousand rows.
_SMALL_ROWS_SQL = _rows_sql(
    "(tenant_id, kafka_partition) IN {chains:Array(Tuple(String, UInt32))} "
    f"AND chain_seq > 0 AND chain_seq <= {CHUNK}",
    "PARTITION BY tenant_id, kafka_partition",
)
# The chunks are ranges of chain_seq, not "the next CHUNK rows": a LIMIT after ORDER BY would
# have the engine hash every remaining row of the chain for each chunk.
_LAST_SEQ_SQL = f"""
SELECT max(chain_seq) FROM agentaudit.events
WHERE tenant_id = {{tenant:String}} AND kafka_partition = {{partition:UInt32}}
{_FENCE}"""
_NEXT_SEQ_SQL = f"""
SELECT min(chain_seq) FROM agentaudit.events
WHERE tenant_id = {{tenant:String}} AND kafka_partition = {{partition:UInt32}}
  AND chain_seq > {{after:UInt64}}
{_FENCE}"""


@dataclass(frozen=True)
class Window:
    """Which rows are reported: ``occurred_at`` in [start, end)."""

    start: datetime = _FAR_PAST
    end: datetime = _FAR_FUTURE

    @property
    def everything(self) -> bool:
        return self.start == _FAR_PAST and self.end == _FAR_FUTURE


@dataclass(frozen=True)
class Chain:
    """A chain to verify: ``last_seq`` is its highest stored chain_seq (0: no rows)."""

    tenant: str
    partition: int
    last_seq: int = 0


def chains(store: Store, anchor: DirectoryAnchor, tenant: str = "") -> list[Chain]:
    """Every chain with rows or checkpoints in the store, or notes in the anchor dir."""
    found = {
        (str(t), int(p)): int(last or 0)
        for t, p, last in store.query(_CHAINS_SQL, {"tenant": tenant}).result_rows
    }
    for c in anchor.chains():
        if not tenant or c[0] == tenant:
            found.setdefault(c, 0)
    return [Chain(t, p, last) for (t, p), last in sorted(found.items())]


def checkpoints(store: Store, anchor: DirectoryAnchor, tenant: str, partition: int) -> list[Found]:
    """The chain's notes from the table (with frontiers) and from the anchor directory."""
    return _checkpoints(store, anchor, [Chain(tenant, partition)])[(tenant, partition)]


def _checkpoints(
    store: Store, anchor: DirectoryAnchor, batch: Sequence[Chain]
) -> dict[tuple[str, int], list[Found]]:
    keys = [(c.tenant, c.partition) for c in batch]
    out: dict[tuple[str, int], list[Found]] = {k: [] for k in keys}
    for t, p, note, frontier in store.query(_CHECKPOINTS_SQL, {"chains": keys}).result_rows:
        out[(str(t), int(p))].append(Found(_text(note), frozenset({"store"}), _frontier(frontier)))
    for t, p in keys:
        out[(t, p)] += [Found(n, frozenset({"anchor"})) for n in anchor.notes(t, p)]
    return out


def partition_newest(
    store: Store, anchor: DirectoryAnchor, keys: PublicKeys, deployment: str, partition: int
) -> tuple[int, bool] | None:
    """The newest checkpoint a sink signed of any chain of ``partition`` that verifies: its
    ``time`` and whether it is a ``handoff`` (a tie: not one); None if there is none. Read
    from the table's newest notes and each chain's newest note in the anchor directory (the
    table alone could be rolled back); ``end`` checkpoints are no sink's tick."""
    notes = [
        (str(t), _text(n))
        for t, n in store.query(_NEWEST_SQL, {"partition": partition}).result_rows
    ]
    for t, p in anchor.chains():
        if p == partition and (n := anchor.latest(t, p)) is not None:
            notes.append((t, n))
    best: tuple[int, bool] | None = None
    for t, n in notes:
        try:
            origin = origin_for(deployment, t, partition)
        except CheckpointError:
            continue
        held = Held(n, frozenset(), None)
        open_held(held, keys, keys.verifiers(origin), origin)
        if held.cp is None or held.time is None or held.end:
            continue
        if best is None or (held.time, not held.handoff) > (best[0], not best[1]):
            best = (held.time, held.handoff)
    return best


Chained = tuple[Chain, list[Found], Iterable[Row | Run]]
"""A chain, its checkpoints (both sources), its rows (`rows`)."""


def read_chains(
    store: Store, anchor: DirectoryAnchor, all_chains: Sequence[Chain], window: Window
) -> Iterator[Chained]:
    """Each chain with its checkpoints and rows, in order. A chain's checkpoints are read
    before its rows, so a checkpoint signed meanwhile covers only rows already stored (never
    rows the verifier did not read). Small chains are read together, up to a chunk's worth of
    rows per query, the next batch while the caller verifies this one; a larger chain is
    read chunk by chunk (`rows`)."""
    units: list[list[Chain]] = []
    rows_in_last = 0  # rows of the last unit so far (a running sum: 10k tiny chains share one)
    for c in all_chains:
        last = units[-1] if units else None
        if (
            c.last_seq <= CHUNK
            and last
            and last[0].last_seq <= CHUNK
            and (rows_in_last + c.last_seq <= CHUNK)
        ):
            last.append(c)
            rows_in_last += c.last_seq
        else:
            units.append([c])
            rows_in_last = c.last_seq
    with ThreadPoolExecutor(1, thread_name_prefix="verify-batch") as reader:
        ahead: Future[list[Chained]] | None = None
        for i, unit in enumerate(units):
            if unit[0].last_seq > CHUNK:
                c = unit[0]
                found = checkpoints(store, anchor, c.tenant, c.partition)
                yield c, found, rows(store, c.tenant, c.partition, window, c.last_seq)
                continue
            batch = (
                ahead.result() if ahead is not None else _read_small(store, anchor, unit, window)
            )
            nxt = units[i + 1] if i + 1 < len(units) else None
            ahead = None
            if nxt is not None and nxt[0].last_seq <= CHUNK:
                ahead = reader.submit(_read_small, store, anchor, nxt, window)
            yield from batch


def _read_small(
    store: Store, anchor: DirectoryAnchor, batch: Sequence[Chain], window: Window
) -> list[Chained]:
    """Checkpoints, then rows, of chains whose rows all lie within the first chunk."""
    found = _checkpoints(store, anchor, batch)
    keys = [(c.tenant, c.partition) for c in batch if c.last_seq]
    columns: Sequence[Sequence[Any]] = []
    if keys:
        params = {"chains": keys, "lo": window.start, "hi": window.end}
        columns = store.query(
            _SMALL_ROWS_SQL, params, column_formats={"body": "bytes"}
        ).result_columns  # type: ignore[call-arg]
    spans: dict[tuple[str, int], tuple[int, int]] = {}
    if columns and columns[0]:
        tenants, parts = columns[0], columns[1]
        start = 0
        for i in range(1, len(tenants) + 1):
            if i == len(tenants) or tenants[i] != tenants[start] or parts[i] != parts[start]:
                spans[(str(tenants[start]), int(parts[start]))] = (start, i)
                start = i
    out: list[Chained] = []
    for c in batch:
        a, b = spans.get((c.tenant, c.partition), (0, 0))
        chunk = _chunk_rows([col[a:b] for col in columns[2:]]) if b > a else []
        out.append((c, found[(c.tenant, c.partition)], chunk))
    return out


def _frontier(hexes: Any) -> tuple[bytes, ...] | None:
    try:
        return tuple(bytes.fromhex(_text(h)) for h in hexes)
    except ValueError:
        return None  # a garbled frontier is just not used (it is never trusted anyway)


def rows(
    store: Store, tenant: str, partition: int, window: Window, last_seq: int | None = None
) -> Iterator[Row | Run]:
    """The chain's rows in ``chain_seq`` order as :data:`Row` tuples and :class:`Run` blocks
    of them, chunk by chunk.

    The next chunk is read (by a thread) while the caller verifies this one: the engine's
    hashing and the verifier's tree then share the two cores instead of taking turns."""
    params: dict[str, Any] = {
        "tenant": tenant,
        "partition": partition,
        "lo": window.start,
        "hi": window.end,
    }

    def fetch(after: int) -> list[Row | Run]:
        result = store.query(
            _ROWS_SQL, {**params, "after": after}, column_formats={"body": "bytes"}
        )  # type: ignore[call-arg]
        columns = result.result_columns
        return _chunk_rows(columns[2:]) if columns and columns[0] else []

    last = last_seq
    if last is None:
        last = int(store.query(_LAST_SEQ_SQL, params).result_rows[0][0] or 0)
    with ThreadPoolExecutor(1, thread_name_prefix="verify-read") as reader:
        after = 0
        ahead = reader.submit(fetch, after) if after < last else None
        while ahead is not None:
            chunk = ahead.result()
            if not chunk:  # a gap wider than a range (or a forged row far ahead): skip to it
                after = (
                    int(store.query(_NEXT_SEQ_SQL, {**params, "after": after}).result_rows[0][0])
                    - 1
                )
                ahead = reader.submit(fetch, after)
                continue
            after += CHUNK
            ahead = reader.submit(fetch, after) if after < last else None
            yield from chunk


def _chunk_rows(columns: Sequence[Sequence[Any]]) -> list[Row | Run]:
    """One chunk's columns (`_ROWS_SQL`) as `Row` tuples, each block of rows the engine
    checked as its first row and a `Run` of the rest."""
    seq, checked, _, _, body, cost, priced, version, prev, row_hash, leaf, ingested = columns

    def row(i: int) -> Row:
        c = cost[i]
        return (
            seq[i],
            body[i],
            Decimal(c) if c else None,
            priced[i],
            version[i],
            prev[i],
            row_hash[i],
            leaf[i],
            ingested[i],
            checked[i],
            "",
        )

    out: list[Row | Run] = []
    start, n = 0, len(seq)  # start: first row of the current block of engine-checked rows
    for i in [*(i for i, b in enumerate(body) if b is not None), n]:
        if i > start:
            out.append(row(start))
        if i - start > 1:
            raw = bytes.fromhex("".join(leaf[start + 1 : i]))
            leaves = [raw[k : k + 32] for k in range(0, len(raw), 32)]
            out.append(Run(seq[start + 1], leaves, ingested[start + 1 : i], row_hash[i - 1]))
        if i < n:
            out.append(row(i))
        start = i + 1
    return out
