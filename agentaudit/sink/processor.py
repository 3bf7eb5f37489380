"""The sink's decisions, free of Kafka and ClickHouse I/O: what each message becomes.

`SinkProcessor.add` routes one message to the pending batch (event row, dead letter, or
nothing when it is already stored or a re-sent duplicate); `take` hands the batch to the
worker, which inserts it and then calls `stored`. Watermarks are per table: a message is
skipped for a table when its offset is at or below the highest offset that table already
holds for the partition, which is what makes replays after a crash exactly-once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

import orjson

from agentaudit.sink.chain import ChainHeads
from agentaudit.sink.deadletter import keep, source_headers
from agentaudit.sink.decode import Accepted, Reason, Rejected, decode, not_after
from agentaudit.sink.dedup import ContentDigest, RecentIds, Seen, event_key
from agentaudit.sink.rows import EventCost, Source, dead_letter_row, event_row
from agentaudit.trail.leaf import ChainLeaves
from agentaudit_schemas.events import MAX_EVENT_BYTES
from agentaudit_schemas.pricing import Pricing
from agentaudit_sdk.clock import UtcNow, utc_now

_CONFLICT = Rejected(
    Reason.EVENT_ID_CONFLICT,
    "this tenant's event_id was stored with other content: a re-sent event is byte-identical, "
    "a new event needs a new id",
)


@dataclass
class DlqRecord:
    """A message for the dead-letter topic: original key and bytes, the reason in headers."""

    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


@dataclass
class Batch:
    events: list[tuple[Any, ...]] = field(default_factory=list)
    occurred_at: list[datetime] = field(default_factory=list)
    """`occurred_at` of each row in `events`, same order (end-to-end latency measurement)."""
    leaves: list[tuple[str, int, bytes]] = field(default_factory=list)
    """(tenant_id, partition, leaf hash) of each row in `events`, same order: the chains' Merkle
    trees grow by these once the store has taken the batch."""
    dead_letters: list[tuple[Any, ...]] = field(default_factory=list)
    dlq: list[DlqRecord] = field(default_factory=list)
    # partition → (first offset, last offset) seen in this batch, stored or skipped
    ranges: dict[int, tuple[int, int]] = field(default_factory=dict)
    # partition → its log epoch (stamped by `take`; a batch never spans two epochs of one partition)
    epochs: dict[int, int] = field(default_factory=dict)
    event_high: dict[int, int] = field(default_factory=dict)
    dead_letter_high: dict[int, int] = field(default_factory=dict)
    started: float = 0.0
    size: int = 0
    """Bytes of the messages this batch covers (values and keys, and the headers of its dead
    letters, which it holds): `sink_batch_bytes`."""

    @property
    def messages(self) -> int:
        return sum(last - first + 1 for first, last in self.ranges.values())

    @property
    def rows(self) -> int:
        return len(self.events) + len(self.dead_letters)

    def dedup_token(self, topic: str, table: str) -> str:
        """`insert_deduplication_token` for a server: the source ranges this batch covers."""
        # The epoch is in the token: a new log reuses offsets, and a server would drop its
        # first batches as duplicates of the old log's.
        spans = ",".join(
            f"{p}@{self.epochs.get(p, 0)}:{a}-{b}" for p, (a, b) in sorted(self.ranges.items())
        )
        return f"{table}|{topic}|{spans}"


@dataclass
class SinkCounters:
    accepted: int = 0
    dead_lettered: int = 0
    duplicates: int = 0
    already_stored: int = 0
    dlq_unsent: int = 0
    """Dead letters the DLQ topic refused even cut down (their table rows are stored)."""
    events_stored: int = 0
    """Event rows the store acknowledged (`accepted` counts them as they join a batch: a
    batch dropped unstored, fenced or at a stop with the store down, is in that count only)."""
    dead_letters_stored: int = 0
    """Dead-letter rows the store acknowledged."""


class Hints(NamedTuple):
    """Best-effort identity of a rejected message, for its dead-letter row and for erasure."""

    tenant: str
    event_id: str
    user: str | None = None
    """Its `user_id` (None: none, or not JSON: see `parsed`)."""
    occurred_at: str = ""
    """Its `occurred_at` as sent ('' when absent or not text)."""
    parsed: bool = False
    """Whether it is a JSON object (only then do `user` and `occurred_at` say anything)."""


def _hints(value: bytes | None, key: bytes | None) -> Hints:
    """Best-effort tenant, event id, user and time of a rejected message."""
    tenant = (key or b"")[:256].decode("utf-8", "replace")[:64]
    if value is not None and len(value) > MAX_EVENT_BYTES:
        return Hints(tenant, "")  # not parsed: megabytes of JSON on the consumer's loop
    try:
        doc = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return Hints(tenant, "")
    if not isinstance(doc, dict):
        return Hints(tenant, "")
    if isinstance(doc.get("tenant_id"), str):
        tenant = doc["tenant_id"][:64]
    event_id = doc["event_id"][:64] if isinstance(doc.get("event_id"), str) else ""
    user = doc.get("user_id")
    occurred = doc.get("occurred_at")
    return Hints(
        tenant,
        event_id,
        user if isinstance(user, str) else None,
        occurred if isinstance(occurred, str) else "",
        True,
    )


ErasedBy = Callable[[str, str | None, str], str | None]
"""(tenant, user_id, occurred_at as sent) -> the subject's erasure mark when content that
occurred then is erased (`agentaudit.subjects.seal.Sealer.erased_by`), else None."""


class SinkProcessor:
    """Per-worker sink state: chains, recent ids, per-table watermarks, the pending batch."""

    def __init__(
        self,
        pricing: Pricing,
        dedup_capacity: int,
        clock: UtcNow = utc_now,
        max_clock_skew_s: float = 900.0,
        seal: Callable[[dict[str, Any], bytes], bytes] | None = None,
        digest_key: bytes = b"",
        erased_by: ErasedBy | None = None,
    ) -> None:
        self.cost = EventCost(pricing)
        # Of each event's content as sent, kept in the window and with its row (`dedup`); keyed
        # with `digest_key` (a secret outside the store) when content is sealed.
        self.digest = ContentDigest(digest_key)
        # Encrypts an accepted event's personal content (in its document, and returns its new
        # canonical bytes) before it is chained (agentaudit.subjects.seal);
        # raises when the key store is down: the event is then neither stored nor committed.
        self.seal = seal
        # A dead letter of a subject erased by the time its content occurred keeps no bytes.
        self.erased_by = erased_by
        # `occurred_at` may be this far after its Kafka record's timestamp
        # (AGENTAUDIT_MAX_CLOCK_SKEW_S).
        self.max_skew_ms = max_clock_skew_s * 1000
        self.clock = clock
        self.chains = ChainHeads()
        self._leaves: dict[tuple[str, int], ChainLeaves] = {}
        """Per chain, its leaf hasher (the chain's fixed leaf prefix hashed once)."""
        self.recent = RecentIds(dedup_capacity)
        self.event_watermark: dict[int, int] = {}
        self.dead_letter_watermark: dict[int, int] = {}
        self.epochs: dict[int, int] = {}
        """partition → its current log epoch (`agentaudit.sink.logguard`); 0 when absent."""
        self.counters = SinkCounters()
        self.batch = Batch()

    def recover(
        self,
        event_watermark: dict[int, int],
        dead_letter_watermark: dict[int, int],
        heads: dict[tuple[str, int], tuple[int, str]],
        recent_ids: list[str],
        epochs: dict[int, int] | None = None,
        recent_digests: list[int] | None = None,
    ) -> None:
        """Load what the store holds of the assigned partitions' current log epochs (the
        watermarks are that epoch's; `recent_ids` are `dedup.event_key`s, oldest first, with
        their `recent_digests`, 0 when unknown); call with an empty pending batch."""
        self.event_watermark = dict(event_watermark)
        self.dead_letter_watermark = dict(dead_letter_watermark)
        self.epochs = dict(epochs or {})
        self.chains.load(heads)
        self.recent.reset(recent_ids, recent_digests)

    def new_epoch(self, partition: int) -> int:
        """The partition's log was replaced: its offsets start again, the store holds nothing
        of the new log. Chains continue; event-id dedup keeps re-sent events out. Call with
        nothing of `partition` pending. Returns the new epoch."""
        assert partition not in self.batch.ranges, "flush before starting a new epoch"
        epoch = self.epochs.get(partition, 0) + 1
        self.epochs[partition] = epoch
        self.event_watermark.pop(partition, None)
        self.dead_letter_watermark.pop(partition, None)
        return epoch

    def resume_offset(self, partition: int) -> int:
        """Where to read a partition from after recovery.

        Dead letters of a batch are inserted before its events, so everything after the
        event watermark may be missing from `events`; dead letters in that range are
        skipped by their own watermark.
        """
        return self.event_watermark.get(partition, -1) + 1

    def add(self, source: Source, value: bytes | None) -> None:
        """Route one consumed message into the pending batch."""
        batch = self.batch
        ranges = batch.ranges
        partition, offset = source.partition, source.offset
        if not ranges:
            batch.started = time.monotonic()
        span = ranges.get(partition)
        ranges[partition] = (offset, offset) if span is None else (span[0], offset)
        batch.size += len(value or b"") + len(source.key or b"")
        # Judged against the record's timestamp, never the wall clock: a replay decides the same.
        # Kafka's "no timestamp" is -1; some clients leave 0: neither is a time to judge by.
        verdict = decode(value, not_after(source.timestamp_ms, self.max_skew_ms))
        if type(verdict) is Accepted:
            self._add_event(source, verdict, value)
            return
        assert isinstance(verdict, Rejected)
        self._dead_letter(source, value, verdict, _hints(value, source.key))

    def _dead_letter(
        self, source: Source, value: bytes | None, verdict: Rejected, hints: Hints
    ) -> None:
        if source.offset <= self.dead_letter_watermark.get(source.partition, -1):
            self.counters.already_stored += 1
            return
        tenant, event_id = hints.tenant, hints.event_id
        mark = self._erased(hints)
        if mark is not None:
            # Its subject was erased by the time it occurred (`agentaudit erase`, which erases
            # the dead letters stored by then): it arrived later, so it keeps no bytes either.
            value, source = b"", source._replace(headers=())
            verdict = Rejected(
                verdict.reason, f"{verdict.detail}; original erased on arrival (erased {mark})"
            )
        batch = self.batch
        if source.headers:
            # Held with the dead letter (its row and DLQ record) until the flush: counted toward
            # `sink_batch_bytes` like values, or a flood of rejected records carrying megabytes
            # of headers each would grow a batch far past it.
            batch.size += sum(len(name) + len(data or b"") for name, data in source.headers)
        # An oversized message keeps a prefix, its size and hash: a whole 10 MB message would
        # not fit the DLQ topic (and the table gains nothing from it).
        kept, extra, note = keep(value or b"")
        detail = verdict.detail + note
        batch.dead_letters.append(
            dead_letter_row(
                source, verdict.reason.value, detail, kept, self.clock(), tenant, event_id
            )
        )
        batch.dlq.append(
            DlqRecord(
                source.key,
                kept,
                [
                    ("reason", verdict.reason.value.encode()),
                    ("detail", verdict.detail[:512].encode()),
                    ("source", f"{source.topic}:{source.partition}:{source.offset}".encode()),
                    *extra,
                    *source_headers(source.headers),
                ],
            )
        )
        batch.dead_letter_high[source.partition] = source.offset
        self.counters.dead_lettered += 1

    def _erased(self, hints: Hints) -> str | None:
        """The erasure mark that covers a rejected message's content, or None (not JSON, no
        tenant slug or time that can be read: kept as sent)."""
        if self.erased_by is None or not hints.parsed or not hints.occurred_at:
            return None
        return self.erased_by(hints.tenant, hints.user, hints.occurred_at)

    def _add_event(self, source: Source, verdict: Accepted, value: bytes | None) -> None:
        partition, offset = source.partition, source.offset
        if offset <= self.event_watermark.get(partition, -1):
            self.counters.already_stored += 1
            return
        document, canonical, occurred_at = verdict
        # Of the content as sent (before sealing, whose nonces differ per message): a re-sent
        # event is byte-identical, a reused id is not. Stored with the row and recovered with
        # its id, so the verdict is the same after a restart (`dedup.ContentDigest`).
        digest = self.digest(canonical)
        if self.seal is not None:
            # Before the id is remembered: a failed seal must not make a replay a "duplicate".
            canonical = self.seal(document, canonical)
        tenant, event_id = document["tenant_id"], document["event_id"]
        seen = self.recent.seen(event_key(tenant, event_id), digest)
        if seen is Seen.REPEAT:
            self.counters.duplicates += 1
            return
        if seen is Seen.CONFLICT:  # a reused id: the message is kept, not dropped as a re-send
            user = document.get("user_id")
            hints = Hints(tenant, event_id, user, document["occurred_at"], True)
            self._dead_letter(source, value, _CONFLICT, hints)
            return
        key = (tenant, partition)
        link = self.chains.extend(key, canonical)
        cost = self.cost.of_document(document, occurred_at)
        leaves = self._leaves.get(key)
        if leaves is None:
            leaves = self._leaves[key] = ChainLeaves(tenant, partition)
        leaf = leaves.hash(link.seq, *cost, canonical)
        batch = self.batch
        batch.events.append(event_row(canonical, cost, link, source, leaf, digest))
        batch.leaves.append((tenant, partition, leaf))
        batch.occurred_at.append(occurred_at)
        batch.event_high[partition] = offset
        self.counters.accepted += 1

    def take(self) -> Batch:
        """Hand over the pending batch and start a new one."""
        batch, self.batch = self.batch, Batch()
        batch.epochs = {p: self.epochs.get(p, 0) for p in batch.ranges}
        return batch

    def stored(self, batch: Batch) -> None:
        """Advance the watermarks once the batch's inserts are acknowledged."""
        self.event_watermark.update(batch.event_high)
        self.dead_letter_watermark.update(batch.dead_letter_high)
        self.counters.events_stored += len(batch.events)
        self.counters.dead_letters_stored += len(batch.dead_letters)
