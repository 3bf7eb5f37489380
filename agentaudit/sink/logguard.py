"""Is the log being read the one the store's offsets describe? Checked per partition, in band.

The sink skips a message whose offset is at or below what the store holds (exactly once).
That is only right while the partition's log is the one those offsets came from. A topic
deleted and recreated, or a broker that keeps nothing restarted (the local one), starts the
log again at offset 0, and without this check the first new events look "already stored"
and are skipped silently.

How it checks, without an extra consumer or round trip: on every assignment the worker
seeks one message early, to the *anchor* (the stored row at the highest offset of the
partition's current epoch), and the first message fetched must be that row (same event id;
for a dead letter, same Kafka timestamp and original bytes). Mid-run, the anchor is the last
message delivered; it is checked again whenever offsets go backwards under the consumer.
A fetch position beyond the end of the log means the log is shorter than the one read
before: replaced. Kafka says so with OffsetOutOfRange (the consumer runs with
`auto_offset_reset="none"`, so it is never reset silently); the local broker answers such a
fetch with nothing, but its high watermark in the fetch response is below the position. A
position before the start of the log means retention deleted messages the sink had not read:
logged as an error, the sink goes on from the start.

On a replaced log the worker flushes what it holds, starts a new log epoch for the partition
(watermarks start fresh, `log_epoch` + 1 on every row) and reads the new log from its
start; events the store already holds (an SDK retry, a spool replay) are dropped by event id.
Pure: no Kafka or store I/O; `SinkWorker` acts on the `Decision`s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol


class ConsumedMessage(Protocol):
    """What the guard reads of a consumed message (aiokafka's ConsumerRecord has it)."""

    offset: int
    timestamp: int
    value: bytes | None


@dataclass(frozen=True, slots=True)
class Anchor:
    """A message known to be at `offset` in the log read so far; every field given must match."""

    offset: int
    event_id: str | None = None
    timestamp_ms: int | None = None
    value_prefix: bytes | None = None

    @classmethod
    def of(cls, record: ConsumedMessage) -> Anchor:
        """The exact message just read (a reference to its bytes, no copy)."""
        return cls(record.offset, timestamp_ms=record.timestamp, value_prefix=record.value or b"")

    def matches(self, record: ConsumedMessage) -> bool:
        data = record.value or b""
        if self.event_id is not None and self.event_id.lower().encode() not in data.lower():
            return False
        if self.timestamp_ms is not None and abs(self.timestamp_ms - record.timestamp) > 1:
            return False  # ±1 ms: stored as DateTime64(3) from a float division
        return self.value_prefix is None or data.startswith(self.value_prefix)


@dataclass(frozen=True, slots=True)
class Decision:
    """What the worker does with a fetched chunk of one partition."""

    records: Sequence[Any] = ()
    """Messages to process, in order."""
    seek: int | None = None
    """Seek the partition here (after processing `records`)."""
    reset: str | None = None
    """The log was replaced (why): flush, start a new epoch, read it from its start."""
    note: str | None = None
    """Something to log as an error (messages the log lost before they were read)."""


@dataclass(slots=True)
class _Track:
    expected: int | None
    """Next offset to read; None after a reset: whatever the new log starts with."""
    last: Anchor | None
    """The latest message known to be in the current log (stored, or delivered)."""
    verifying: Anchor | None = None
    """When set, the first message fetched must be this one."""
    resume: int = 0
    """Where to read on from once `verifying` matched."""


_DROP = Decision()


def _deliver(track: _Track, records: Sequence[ConsumedMessage]) -> Decision:
    track.expected = records[-1].offset + 1
    track.last = Anchor.of(records[-1])
    return Decision(records=records)


class LogGuard:
    """Per assigned partition: where to read, and whether the log is still the same one."""

    def __init__(self) -> None:
        self._tracks: dict[int, _Track] = {}

    def clear(self) -> None:
        """Partitions revoked: nothing is read until the next `assign`."""
        self._tracks.clear()

    def assign(self, partition: int, resume: int, anchor: Anchor | None) -> int:
        """Start reading `partition` at `resume`, after checking `anchor`; returns the seek
        offset."""
        if anchor is None:
            self._tracks[partition] = _Track(expected=resume, last=None)
            return resume
        self._tracks[partition] = _Track(
            expected=None, last=anchor, verifying=anchor, resume=resume
        )
        return anchor.offset

    def restarted(self, partition: int) -> None:
        """The worker began a new epoch and sought to the start of the new log."""
        self._tracks[partition] = _Track(expected=None, last=None)

    def check(self, partition: int, records: Sequence[ConsumedMessage]) -> Decision:
        """Decide about a non-empty chunk fetched from `partition`, in offset order."""
        track = self._tracks.get(partition)
        if track is None:
            return _DROP  # revoked, or fetched before this assignment's seek
        if track.verifying is not None:
            decision = self._verify(track, records)
            if decision is not None:
                return decision
            records = records[1:]
            if not records:
                return _DROP
        first = records[0].offset
        if track.expected is not None and first < track.expected:
            # Offsets went backwards under the consumer: is the last message read still there?
            if track.last is None:
                return Decision(reset=f"offset {first} fetched where {track.expected} was expected")
            track.verifying, track.resume = track.last, track.expected
            return Decision(seek=track.last.offset)
        return _deliver(track, records)

    def _verify(self, track: _Track, records: Sequence[ConsumedMessage]) -> Decision | None:
        """None when the anchor matched and reading goes on with the messages after it."""
        anchor = track.verifying
        assert anchor is not None
        first = records[0]
        if first.offset < anchor.offset:
            return _DROP  # fetched before the seek to the anchor
        track.verifying = None
        if first.offset > anchor.offset:
            # The anchor's offset is no longer in the log (compaction, or retention between
            # two fetches): nothing to compare; no message below the anchor is read.
            return _deliver(track, records)
        if not anchor.matches(first):
            return Decision(
                reset=f"offset {anchor.offset} holds another message than the one the store holds"
            )
        track.expected = track.resume
        if track.resume != anchor.offset + 1:
            return Decision(seek=track.resume)  # the anchor was a dead letter ahead of the events
        return None

    def waiting_at(self, partition: int) -> int | None:
        """The offset the next message of `partition` must have; None when any will do."""
        track = self._tracks.get(partition)
        if track is None:
            return None
        return track.verifying.offset if track.verifying is not None else track.expected

    def out_of_range(self, partition: int, offset: int, log_start: int) -> Decision:
        """The broker said `offset` is not in the partition's log, which starts at `log_start`."""
        track = self._tracks.get(partition)
        if track is None:
            return _DROP
        if offset < log_start:
            self._tracks[partition] = _Track(expected=log_start, last=None)
            return Decision(
                seek=log_start,
                note=f"offsets {offset}..{log_start - 1} were deleted from the log (retention) "
                "before the sink read them",
            )
        return Decision(reset=f"offset {offset} is beyond the end of the log")
