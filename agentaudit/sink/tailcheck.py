"""A chain's unsigned tail checked against the Kafka records it came from, before it is signed.

A sink that dies without handing its partitions off leaves rows after each chain's newest
anchored checkpoint that no checkpoint covers (`agentaudit.sink.trees.Tail`). Anyone with write
access to the store could have forged, edited, reordered or deleted some of them (every hash
recomputed) before the next owner rebuilt the chain, which would then sign them. But every row
names its source (`kafka_partition`, `log_epoch`, `kafka_offset`), and Kafka keeps records far
longer than one checkpoint interval. So the next owner reads the partition's records from
where the tail can start to its stored watermark and walks each held chain's rows, in
`chain_seq` order, beside them (`PartitionCheck.feed`). A row is good when:

- the record at its offset is an event the sink accepts (`agentaudit.sink.decode`, judged
  against the record's timestamp as the sink does) of the chain's tenant, and the chain's
  previous good row came from an earlier offset (no reordering);
- its payload is that event's canonical document: byte for byte, or, where the sink sealed
  personal content (`agentaudit.subjects.seal`; ciphertext differs per run), with each sealed
  value opened with the subject's key and equal to the record's (a destroyed key: the value
  is taken as it is);
- its `leaf_hash` is the leaf of its own columns (the tree is built from recomputed leaves).

And no record is left out: an accepted event of the tenant with no row at its offset must be a
re-send (its id stored at another place) or a dead letter at that offset; otherwise a row was
deleted. The rebuilt tree's root at the tail's head must equal the checked tree's.

What is not compared: the cost columns against a re-pricing (`agentaudit verify` re-prices
every row, signed or not) and the typed columns (derived from the payload by the store; verify
re-derives them).

The first bad row stops the chain: `Outcome.bad` names it, and `Outcome.tree` is the chain's
tree up to the row before it, the last one found good.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, NamedTuple, cast

import orjson

from agentaudit.sink.chain import ChainKey
from agentaudit.sink.decode import Accepted, decode, not_after
from agentaudit.sink.trees import Tail
from agentaudit.store.protocol import Store
from agentaudit.store.protocol import column_text as _text
from agentaudit.subjects.keystore import SubjectKeyStore
from agentaudit.subjects.seal import is_sealed, open_event, sealed_paths
from agentaudit.trail.leaf import ChainLeaves
from agentaudit.trail.merkle import CompactTree
from agentaudit_schemas.canonical import document_bytes

PAGE_ROWS = 2_000
"""Tail rows read from the store at a time, per chain."""


class Record(NamedTuple):
    """One Kafka record of the partition: what the sink decided on."""

    offset: int
    timestamp_ms: int
    value: bytes | None


class TailRow(NamedTuple):
    seq: int
    epoch: int
    offset: int
    payload: bytes
    cost: Decimal
    priced: bool
    version: str
    leaf: str


@dataclass
class Outcome:
    """One held chain's verdict: good (`bad` None) or the first bad row and why."""

    key: ChainKey
    tree: CompactTree
    """Good: the tree at the tail's head. Bad: up to the last good row."""
    checked: int = 0
    """Rows found good."""
    bad_seq: int | None = None
    bad: str | None = None
    unreadable: bool = False
    """Not checked: Kafka no longer holds the records (the rows may be genuine)."""


_ROWS_SQL = (
    "SELECT chain_seq, log_epoch, kafka_offset, payload, cost_usd, priced, pricing_version, "
    "leaf_hash FROM agentaudit.events WHERE kafka_topic = {topic:String} "
    "AND tenant_id = {t:String} AND kafka_partition = {p:UInt32} "
    "AND chain_seq BETWEEN {a:UInt64} AND {b:UInt64} ORDER BY chain_seq"
)
_OFFSET_SQL = (
    "SELECT log_epoch, kafka_offset, toString(event_id) FROM agentaudit.events "
    "WHERE kafka_topic = {topic:String} "
    "AND tenant_id = {t:String} AND kafka_partition = {p:UInt32} AND chain_seq = {s:UInt64} "
    "LIMIT 1"
)
_FLOOR_SQL = (
    "SELECT max(kafka_offset), count(), argMax(tenant_id, kafka_offset), "
    "argMax(toString(event_id), kafka_offset) FROM agentaudit.events "
    "WHERE kafka_topic = {topic:String} "
    "AND kafka_partition = {p:UInt32} AND log_epoch = {e:UInt32} "
    "AND (tenant_id, chain_seq) IN {pairs:Array(Tuple(String, UInt64))}"
)
_ELSEWHERE_SQL = (
    "SELECT count() FROM agentaudit.events WHERE tenant_id = {t:String} "
    "AND event_id = toUUIDOrZero({id:String}) AND NOT (kafka_topic = {topic:String} "
    "AND kafka_partition = {p:UInt32} AND log_epoch = {e:UInt32} AND kafka_offset = {o:UInt64})"
)
_DEAD_LETTER_SQL = (
    "SELECT count() FROM agentaudit.dead_letters WHERE source_topic = {topic:String} "
    "AND kafka_partition = {p:UInt32} AND log_epoch = {e:UInt32} AND kafka_offset = {o:UInt64}"
)


_NO_RECORD = "Kafka holds no event of this chain at its offset {}: a forged row, or moved"


def _bytes(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else value


def _at(doc: dict[str, Any], path: tuple[str, ...]) -> tuple[dict[str, Any], str] | None:
    node: Any = doc
    for name in path[:-1]:
        node = node.get(name) if isinstance(node, dict) else None
    return (node, path[-1]) if isinstance(node, dict) and path[-1] in node else None


class KeyMemo:
    """`SubjectKeyStore.get` remembered per (tenant, subject, kid): a tail's rows share a few
    keys, and each read is file I/O and an unwrap (~0.4 ms a row before)."""

    def __init__(self, keys: SubjectKeyStore) -> None:
        self.keys = keys
        self._got: dict[tuple[str, str | None, str], Any] = {}

    def get(self, tenant: str, subject: str | None, kid: str) -> Any:
        at = (tenant, subject, kid)
        if at not in self._got:
            if len(self._got) >= 10_000:
                self._got.clear()
            self._got[at] = self.keys.get(tenant, subject, kid)
        return self._got[at]

    def erased_through(self, tenant: str, subject: str | None) -> str | None:
        return self.keys.erased_through(tenant, subject)


def content_differs(
    stored: bytes, accepted: Accepted, keys: SubjectKeyStore | KeyMemo | None
) -> str | None:
    """Why a stored payload is not what the sink stores for the accepted event (None: it is).

    Sealed values are opened with `keys` and compared; one whose key does not exist is taken
    as it is when its subject was erased (`SubjectKeyStore.erased_through`: its keys destroyed,
    or its content erased on arrival); without `keys` (encryption off now) a sealed value at a
    sealed path is not compared. Before, any value under a key id that does not exist passed:
    a row whose content was replaced by ciphertext under a made-up key id (no key needed)
    passed the check and was signed, its content gone with no erasure in the trail.
    """
    if stored == accepted.canonical:
        return None
    try:
        if keys is None:
            doc = orjson.loads(stored)
        else:
            opened = open_event(stored, cast(SubjectKeyStore, keys))  # `get` is all it uses
            if opened.tampered:
                return f"sealed content does not open ({', '.join(opened.tampered)})"
            doc = opened.doc
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError):
        return "its payload is not an event document"
    if not isinstance(doc, dict):
        return "its payload is not an event document"
    expected = orjson.loads(accepted.canonical)
    subject_erased: bool | None = None  # asked once, and only for a value that does not open
    for path in sealed_paths(expected):
        mine, theirs = _at(doc, path), _at(expected, path)
        if mine is None or theirs is None:
            continue
        value = mine[0][mine[1]]
        erased = isinstance(value, dict) and value.get("erased") is True and keys is not None
        if erased and subject_erased is None:
            assert keys is not None
            mark = keys.erased_through(expected["tenant_id"], expected.get("user_id"))
            subject_erased = mark is not None
        if (erased and subject_erased) or (keys is None and is_sealed(value)):
            theirs[0][theirs[1]] = value  # not comparable: the same on both sides
    if document_bytes(doc) != document_bytes(expected):
        return "its payload differs from the Kafka record's event"
    return None


@dataclass
class _Walk:
    """One held chain's rows, walked beside the partition's records."""

    key: ChainKey
    tail: Tail
    low: int
    """The first offset a row of the tail can come from."""
    leaves: ChainLeaves
    tree: CompactTree
    rows: deque[TailRow] = field(default_factory=deque)
    next_seq: int = 0
    last_offset: int = -1
    outcome: Outcome | None = None

    def fail(self, seq: int, why: str, *, unreadable: bool = False) -> None:
        """Stop at row `seq`; `unreadable`: it cannot be checked (not found bad)."""
        checked = self.tree.size - self.tail.signed.size
        self.outcome = Outcome(self.key, self.tree, checked, seq, why, unreadable)


class PartitionCheck:
    """The held chains of one partition, checked against its records fed in offset order."""

    def __init__(
        self,
        store: Store,
        topic: str,
        partition: int,
        epoch: int,
        tails: dict[ChainKey, Tail],
        anchored: dict[ChainKey, int],
        known: set[str] | None,
        *,
        max_skew_ms: float,
        keys: SubjectKeyStore | None,
    ) -> None:
        self.store, self.topic, self.partition, self.epoch = store, topic, partition, epoch
        self.max_skew_ms = max_skew_ms
        self.keys = None if keys is None else KeyMemo(keys)
        self.walks: dict[str, _Walk] = {}
        self.known = known
        self.orphans: dict[str, tuple[int, str]] = {}
        """Tenants with no chain in the partition whose events have no row: offset, event id."""
        self.anchors: dict[int, tuple[str, str]] = {}
        """offset → (tenant, event id) of the signed rows the read range starts after: their
        `kafka_offset` is in no leaf, so it is checked against Kafka before it is relied on."""
        self.moved: str | None = None
        self.floor = self._floor(anchored)
        for key, tail in tails.items():
            tree = CompactTree(*tail.signed.state())
            walk = _Walk(key, tail, 0, ChainLeaves(*key), tree, next_seq=tree.size + 1)
            walk.low = self._low(walk)
            self.walks[key[0]] = walk
        self.records = 0

    def _q(self, sql: str, **params: Any) -> list[Any]:
        return list(
            self.store.query(sql, {"topic": self.topic, "p": self.partition, **params}).result_rows
        )

    def _floor(self, anchored: dict[ChainKey, int]) -> int:
        """Past the newest offset the partition's anchored checkpoints cover (this log epoch):
        a chain with no checkpoint was not stored before it, or that tick would have signed it."""
        pairs = [(t, size) for (t, p), size in anchored.items() if p == self.partition and size]
        if not pairs:
            return 0
        rows = self._q(_FLOOR_SQL, e=self.epoch, pairs=pairs)
        if not rows or not rows[0][1]:
            return 0
        self.anchors[int(rows[0][0])] = (_text(rows[0][2]), _text(rows[0][3]))
        return int(rows[0][0]) + 1

    def _low(self, walk: _Walk) -> int:
        """After the row the anchored checkpoint ends with (its offset, in this log epoch); a
        chain no checkpoint covers: from the partition's floor, or its first row if earlier
        (held by an owner that died too)."""
        size = walk.tail.signed.size
        rows = self._q(_OFFSET_SQL, t=walk.key[0], s=max(size, 1))
        here = rows[0][1] if rows and int(rows[0][0]) == self.epoch else None
        if size == 0:
            return self.floor if here is None else min(self.floor, int(here))
        low = 0 if here is None else int(here) + 1  # an earlier log's row: this log's start
        if walk.tail.head == size:
            # No row after the checkpoint: it is the newest tick's (a chain held or unsigned
            # then has rows after it), so a deleted row came after what that tick covered. Its
            # own row's offset is then not where the read starts (the floor, anchored itself,
            # is at least one past it): not read either. A chain quiet for longer than Kafka
            # keeps records made every held chain of its partition unreadable before.
            return max(low, self.floor)
        if here is not None:
            self.anchors[int(here)] = (walk.key[0], _text(rows[0][2]))
        return low

    @property
    def low(self) -> int:
        """Where the partition's records must be read from (the signed rows it starts after
        included: `anchors`)."""
        lows = [w.low for w in self.walks.values() if w.outcome is None]
        return min([*lows, *self.anchors], default=0)

    def _row(self, walk: _Walk) -> TailRow | None:
        if not walk.rows and walk.next_seq <= walk.tail.head:
            top = min(walk.tail.head, walk.next_seq + PAGE_ROWS - 1)
            for seq, epoch, offset, payload, cost, priced, version, leaf in self._q(
                _ROWS_SQL, t=walk.key[0], a=walk.next_seq, b=top
            ):
                walk.rows.append(
                    TailRow(
                        int(seq),
                        int(epoch),
                        int(offset),
                        _bytes(payload),
                        Decimal(cost),
                        bool(priced),
                        _text(version),
                        _text(leaf),
                    )
                )
        return walk.rows[0] if walk.rows else None

    def _explained(self, offset: int, event_id: str, tenant: str) -> bool:
        """An accepted event with no row at its offset: a re-send (its id stored at another
        place) or a dead letter (a reused id); otherwise its row was deleted."""
        where = {"e": self.epoch, "o": offset}
        if self._q(_DEAD_LETTER_SQL, **where)[0][0]:
            return True
        return bool(self._q(_ELSEWHERE_SQL, t=tenant, id=event_id, **where)[0][0])

    def _good(self, walk: _Walk, row: TailRow, accepted: Accepted) -> str | None:
        """Why `row` is not the chain's next row for `accepted` (None: it is)."""
        if row.seq != walk.next_seq:
            return f"chain_seq {row.seq} where {walk.next_seq} was due"
        leaf = walk.leaves.hash(row.seq, row.cost, row.priced, row.version, row.payload)
        if row.leaf.strip("\x00") and row.leaf != leaf.hex():
            return "its leaf_hash is not the leaf of its columns"
        why = content_differs(row.payload, accepted, self.keys)
        if why is None:
            walk.tree.append_hash(leaf)
        return why

    def _other_log(self, row: TailRow) -> str:
        return (
            f"it is from log epoch {row.epoch} of the partition, Kafka holds epoch "
            f"{self.epoch}'s log: it cannot be checked"
        )

    def _orphan(self, offset: int, tenant: str, event_id: str) -> None:
        """An event of a tenant with no chain in the partition (every row of a new chain
        deleted); `known` None: the caller holds only some chains, nothing is an orphan."""
        if (
            self.known is None
            or tenant in self.known
            or tenant in self.orphans
            or offset < self.floor
        ):
            return
        if not self._explained(offset, event_id, tenant):
            self.orphans[tenant] = (offset, event_id)

    def _anchor(self, offset: int, stored: tuple[str, str], verdict: object) -> None:
        if type(verdict) is Accepted:
            doc = verdict.document  # type: ignore[attr-defined]
            if (doc["tenant_id"], doc["event_id"]) == stored:
                return
        self.moved = (
            f"the signed row of {stored[0]} said to come from offset {offset} ({stored[1]}) does "
            "not: kafka_offset values in the store were changed, the tail cannot be located"
        )

    def feed(self, records: list[Record]) -> None:
        """The partition's next records, in offset order."""
        self.records += len(records)
        for offset, timestamp_ms, value in records:
            verdict = decode(value, not_after(timestamp_ms, self.max_skew_ms))
            anchor = self.anchors.pop(offset, None)
            if anchor is not None:
                self._anchor(offset, anchor, verdict)
            if type(verdict) is not Accepted:
                continue
            tenant = verdict.document["tenant_id"]
            walk = self.walks.get(tenant)
            if walk is None:
                self._orphan(offset, tenant, verdict.document["event_id"])
                continue
            if walk.outcome is not None or offset < walk.low:
                continue
            row = self._row(walk)
            if row is not None and row.epoch != self.epoch:
                walk.fail(row.seq, self._other_log(row), unreadable=True)
            elif row is not None and row.offset < offset:
                walk.fail(row.seq, _NO_RECORD.format(row.offset))
            elif row is not None and row.offset == offset:
                why = self._good(walk, row, verdict)
                if why is not None:
                    walk.fail(row.seq, f"offset {offset}: {why}")
                else:
                    walk.rows.popleft()
                    walk.next_seq += 1
                    walk.last_offset = offset
            elif not self._explained(offset, verdict.document["event_id"], walk.key[0]):
                walk.fail(
                    walk.next_seq,
                    f"the event at offset {offset} ({verdict.document['event_id']}) has no row: "
                    "a row was deleted",
                )

    def finish(self) -> list[Outcome]:
        """Every held chain's verdict, once the records up to the watermark were fed."""
        out = []
        if self.moved is None and self.anchors:
            offset, (tenant, event_id) = min(self.anchors.items())
            self.moved = (
                f"Kafka holds no record at offset {offset}, where the signed row of {tenant} "
                f"({event_id}) says it came from: kafka_offset values in the store were changed"
            )
        if self.moved is not None:  # no verdict from a walk that may have started wrong
            return [
                Outcome(w.key, w.tail.signed, 0, w.tail.signed.size + 1, self.moved)
                for w in self.walks.values()
            ]
        for walk in self.walks.values():
            if walk.outcome is None:
                row = self._row(walk)
                if row is not None and row.epoch != self.epoch:
                    walk.fail(row.seq, self._other_log(row), unreadable=True)
                elif row is not None:
                    walk.fail(row.seq, _NO_RECORD.format(row.offset))
                elif walk.tree.root() != walk.tail.root:
                    walk.fail(walk.tail.head, "the store's leaves differ from the rows' own")
                else:
                    walk.outcome = Outcome(
                        walk.key, walk.tree, walk.tree.size - walk.tail.signed.size
                    )
            assert walk.outcome is not None
            out.append(walk.outcome)
        for tenant, (offset, event_id) in sorted(self.orphans.items()):
            why = (
                f"the event at offset {offset} ({event_id}) has no row, and the store holds "
                "no chain of its tenant in the partition: its rows were deleted"
            )
            out.append(Outcome((tenant, self.partition), CompactTree(), 0, 1, why))
        return out

    def fail_all(self, why: str) -> list[Outcome]:
        """Every held chain's verdict when the records cannot be read (retention, a new log)."""
        return [
            Outcome(w.key, w.tail.signed, 0, w.tail.signed.size + 1, why, unreadable=True)
            for w in self.walks.values()
        ]
