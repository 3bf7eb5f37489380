"""The record sink's decisions, free of Kafka and ClickHouse I/O: what each message becomes.

`RecordProcessor.add` routes one message of the alerts or control topic into the pending
batch: a row for its record table, a dead letter, or nothing (a tombstone, a message the
store already holds, a record id already stored). `take` hands the batch to the sink, which
inserts it and then calls `stored`.

Exactly once, as in the event sink, by offsets stored in the rows, with one difference: a
partition feeds several tables. So there are two kinds of position:

- per table and (topic, partition), the highest offset the table holds: a message is
  skipped for its table when its offset is at or below it (rows of one table are stored in
  offset order, so that is exact, whatever happened to the other tables);
- per (topic, partition), the last offset of the last *complete* flush (the
  `record_sink_offsets` table): where to resume reading.

Both are per log epoch (migration 0012): when the sink finds a partition's log replaced
(topic recreated, a broker that kept nothing), `new_epoch` forgets the partition's positions
and its new log is read from its start.

Record ids are deterministic, so a job that replays after its own crash re-publishes the
same record as a new message; a window of recent ids per kind, recovered from the store,
drops those (and the records of a replaced log that the store already holds).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from agentaudit.sink.deadletter import LAND, keep, source_headers
from agentaudit.sink.decode import Reason, Rejected
from agentaudit.sink.dedup import RecentIds
from agentaudit.sink.pipeline_records.decode import (
    Parsed,
    Tombstone,
    decode_control_record,
    decode_record,
    hints,
)
from agentaudit.sink.pipeline_records.identity import dead_letter_id
from agentaudit.sink.pipeline_records.rows import RECORD_TABLES, Record
from agentaudit.sink.processor import DlqRecord
from agentaudit.sink.rows import DEAD_LETTER_COLUMNS, Source, dead_letter_row
from agentaudit_sdk.clock import UtcNow, utc_now

DEAD_LETTERS_TABLE = "agentaudit.dead_letters"
DEAD_LETTER_KIND = "dead_letter"
"""The recent-ids window of landed dead letters (by `identity.dead_letter_id`)."""
RECORD_DEAD_LETTER_COLUMNS: tuple[str, ...] = (*DEAD_LETTER_COLUMNS, "dead_letter_id")
"""The record sink's `dead_letters` rows: the event sink's columns and the landed identity
(migration 0022; '' for the record sink's own dead letters)."""
TopicPartitionKey = tuple[str, int]
Header = tuple[str, bytes | None]
"""A Kafka header as aiokafka gives it: its value may be null."""


@dataclass
class RecordBatch:
    rows: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)
    """Table → rows, each in that table's column order."""
    dead_letters: list[tuple[Any, ...]] = field(default_factory=list)
    dlq: list[DlqRecord] = field(default_factory=list)
    ranges: dict[TopicPartitionKey, tuple[int, int]] = field(default_factory=dict)
    """(topic, partition) → first and last offset seen in this batch, stored or skipped."""
    high: dict[str, dict[TopicPartitionKey, int]] = field(default_factory=dict)
    """Table → (topic, partition) → highest offset this batch adds to the table."""
    epochs: dict[TopicPartitionKey, int] = field(default_factory=dict)
    """(topic, partition) → its log epoch (stamped by `take`; one epoch per partition a batch)."""
    started: float = 0.0

    @property
    def row_count(self) -> int:
        return len(self.dead_letters) + sum(len(r) for r in self.rows.values())

    def dedup_token(self, table: str) -> str:
        """`insert_deduplication_token` for a server: the table and the source ranges."""
        # The epoch is in the token: a new log reuses offsets (as in the event sink's token).
        spans = ",".join(
            f"{t}:{p}@{self.epochs.get((t, p), 0)}:{a}-{b}"
            for (t, p), (a, b) in sorted(self.ranges.items())
        )
        return f"{table}|{spans}"

    def offsets_rows(self) -> list[tuple[str, int, int]]:
        """(topic, partition, last offset) of every partition this batch covers."""
        return [(t, p, last) for (t, p), (_first, last) in sorted(self.ranges.items())]

    def offsets_table_rows(self) -> list[tuple[str, int, int, int]]:
        """The `record_sink_offsets` rows of this batch, in `OFFSETS_COLUMNS` order."""
        return [(t, p, last, self.epochs.get((t, p), 0)) for t, p, last in self.offsets_rows()]


@dataclass
class RecordCounters:
    stored: dict[str, int] = field(default_factory=dict)
    """Record kind → rows added (before the insert is acknowledged)."""
    dead_lettered: int = 0
    duplicates: int = 0
    already_stored: int = 0
    tombstones: int = 0
    dlq_unsent: int = 0
    """Dead letters the DLQ topic refused even cut down (their table rows are stored)."""
    landed: int = 0
    """Dead letters of the DLQ topic stored in `dead_letters` (those carrying `LAND`)."""
    landed_copies: int = 0
    """`LAND` dead letters dropped as copies of one already landed (a writer's retry: same
    `identity.dead_letter_id`, another offset)."""
    not_landed: int = 0
    """DLQ messages without `LAND`: a sink's own dead letters, whose row that sink stored."""
    landed_before: int = 0
    """`LAND` dead letters read again that the store already holds (a replay)."""

    @property
    def handled(self) -> int:
        """Messages of the record topics seen since start, whatever became of them (the DLQ
        topic's are `landed` and `not_landed`: a job's record count compares with this)."""
        return (
            sum(self.stored.values())
            + self.dead_lettered
            + self.duplicates
            + self.already_stored
            + self.tombstones
        )


class RecordProcessor:
    """Per-sink state: per-table watermarks, resume positions, recent ids, the pending batch."""

    def __init__(
        self,
        dedup_capacity: int,
        clock: UtcNow = utc_now,
        dlq_topic: str | None = None,
        control_topic: str | None = None,
    ) -> None:
        self.clock = clock
        self.dlq_topic = dlq_topic
        """The dead-letter topic, when this sink also lands its `LAND` dead letters."""
        self.control_topic = control_topic
        """The kill switch's topic: read by the SDK's rules (`decode.decode_control_record`);
        every other topic but the DLQ is read as the alerts topic (`decode.decode_record`)."""
        self.dedup_capacity = dedup_capacity
        self.recent = {
            kind: RecentIds(dedup_capacity) for kind in (*RECORD_TABLES, DEAD_LETTER_KIND)
        }
        self.watermarks: dict[str, dict[TopicPartitionKey, int]] = {}
        self.progress: dict[TopicPartitionKey, int] = {}
        self.epochs: dict[TopicPartitionKey, int] = {}
        """(topic, partition) → its current log epoch; 0 when absent."""
        self.counters = RecordCounters()
        self.batch = RecordBatch()

    def recover(
        self,
        watermarks: dict[str, dict[TopicPartitionKey, int]],
        progress: dict[TopicPartitionKey, int],
        recent_ids: dict[str, list[str]],
        epochs: dict[TopicPartitionKey, int] | None = None,
    ) -> None:
        """Load what the store holds of each partition's current log epoch (the watermarks and
        positions are that epoch's; see `recovery.recover_records`); the batch must be empty."""
        self.watermarks = {table: dict(marks) for table, marks in watermarks.items()}
        self.progress = dict(progress)
        self.epochs = dict(epochs or {})
        for kind, window in self.recent.items():
            window.reset(recent_ids.get(kind, []))

    def new_epoch(self, tp: TopicPartitionKey) -> int:
        """The partition's log was replaced: its offsets start again and the store holds
        nothing of the new log; recent ids keep re-published records out. Call with nothing
        of `tp` pending. Returns the new epoch."""
        assert tp not in self.batch.ranges, "flush before starting a new epoch"
        epoch = self.epochs.get(tp, 0) + 1
        self.epochs[tp] = epoch
        for marks in self.watermarks.values():
            marks.pop(tp, None)
        self.progress.pop(tp, None)
        return epoch

    def resume_offset(self, topic: str, partition: int) -> int:
        """Where to read a partition from: after the last complete flush, else the log start."""
        return self.progress.get((topic, partition), -1) + 1

    def _held(self, table: str, source: Source) -> bool:
        return source.offset <= self.watermarks.get(table, {}).get(
            (source.topic, source.partition), -1
        )

    def add(self, source: Source, value: bytes | None, headers: Sequence[Header] = ()) -> None:
        """Route one consumed message into the pending batch."""
        batch = self.batch
        if not batch.ranges:
            batch.started = time.monotonic()
        tp = (source.topic, source.partition)
        first, _ = batch.ranges.get(tp, (source.offset, source.offset))
        batch.ranges[tp] = (first, source.offset)
        if source.topic == self.dlq_topic:
            self._land(source, value, headers)
            return
        if source.topic == self.control_topic:
            verdict = decode_control_record(source.key, value)
        else:
            verdict = decode_record(value)
        if isinstance(verdict, Parsed):
            table = RECORD_TABLES[verdict.record.record]
            if self._held(table.table, source):  # a replay: no row to build
                self.counters.already_stored += 1
                return
            try:
                row = table.row(verdict.record, verdict.raw, source)
            except Exception as exc:  # noqa: BLE001 - valid but not storable: a dead letter, never a crash loop
                verdict = Rejected(Reason.UNENCODABLE, f"{type(exc).__name__}: {exc}"[:2000])
            else:
                self._add_row(source, verdict.record, row)
                return
        if isinstance(verdict, Tombstone):
            self.counters.tombstones += 1
        elif self._held(DEAD_LETTERS_TABLE, source):
            self.counters.already_stored += 1
        else:
            tenant, record_id = hints(value, source.key)
            reason = verdict.reason.value
            # An oversized message keeps a prefix, its size and hash (as in the event sink).
            kept, extra, note = keep(value or b"")
            self._dead_letter_row(
                source,
                dead_letter_row(
                    source, reason, verdict.detail + note, kept, self.clock(), tenant, record_id
                ),
            )
            batch.dlq.append(
                DlqRecord(
                    source.key,
                    kept,
                    [
                        ("reason", reason.encode()),
                        ("detail", verdict.detail[:512].encode()),
                        ("source", f"{source.topic}:{source.partition}:{source.offset}".encode()),
                        *extra,
                        *source_headers(source.headers),
                    ],
                )
            )
            self.counters.dead_lettered += 1

    def _land(self, source: Source, value: bytes | None, headers: Sequence[Header]) -> None:
        """A DLQ message: its `dead_letters` row when it carries `LAND`, else nothing."""
        # A null header value is as good as absent (Kafka allows it; `.decode` of None raised).
        found = {name: data for name, data in headers if data is not None}
        if found.get(LAND[0]) != LAND[1]:
            self.counters.not_landed += 1
            return
        if self._held(DEAD_LETTERS_TABLE, source):
            self.counters.landed_before += 1
            return
        identity = dead_letter_id(source.key, value, found)
        if not self.recent[DEAD_LETTER_KIND].add(identity):
            self.counters.landed_copies += 1
            return

        def text(name: str) -> str:
            return found.get(name, b"").decode("utf-8", "replace")

        # reason and detail as the writer set them; where the input came from (an OTLP
        # endpoint, an alert's topic position) follows the detail
        detail = text("detail") + (f" (from {text('source')})" if "source" in found else "")
        kept, _, note = keep(value or b"")
        tenant = (source.key or b"").decode("utf-8", "replace")
        self._dead_letter_row(
            source,
            dead_letter_row(
                source,
                text("reason") or "unknown",
                detail + note,
                kept,
                self.clock(),
                tenant,
                text("event_id"),
            ),
            identity,
        )
        self.counters.landed += 1

    def _dead_letter_row(self, source: Source, row: tuple[Any, ...], identity: str = "") -> None:
        """A `dead_letters` row (`RECORD_DEAD_LETTER_COLUMNS`) into the batch, and the table's
        watermark for its partition."""
        self.batch.dead_letters.append((*row, identity))
        self.batch.high.setdefault(DEAD_LETTERS_TABLE, {})[(source.topic, source.partition)] = (
            source.offset
        )

    def _add_row(self, source: Source, record: Record, row: tuple[Any, ...]) -> None:
        table = RECORD_TABLES[record.record]
        if not self.recent[table.record].add(getattr(record, table.id_column)):
            self.counters.duplicates += 1
            return
        self.batch.rows.setdefault(table.table, []).append(row)
        self.batch.high.setdefault(table.table, {})[(source.topic, source.partition)] = (
            source.offset
        )
        self.counters.stored[table.record] = self.counters.stored.get(table.record, 0) + 1

    def take(self) -> RecordBatch:
        """Hand over the pending batch and start a new one."""
        batch, self.batch = self.batch, RecordBatch()
        batch.epochs = {tp: self.epochs.get(tp, 0) for tp in batch.ranges}
        return batch

    def stored(self, batch: RecordBatch) -> None:
        """Advance the watermarks and positions once every insert of the batch is acknowledged."""
        for table, marks in batch.high.items():
            self.watermarks.setdefault(table, {}).update(marks)
        self.progress.update({(t, p): last for t, p, last in batch.offsets_rows()})
