"""Bounded on-disk FIFO for events the broker could not take, replayed in order on reconnect.

Layout: a directory holding numbered segment files (`000000000001.seg`, …, see
`spool_format` for the record format), a `cursor` file (segment and byte offset of the
oldest unacknowledged record) and a `.lock` file: one process owns a spool directory at a
time (`flock`); `Spool.claim` gives each process on a host its own slot under a base dir.

Durability (fsync policy, `fsync=`):
- "rotate" (default): every appended batch is written and flushed to the OS, so it survives
  a crash of the process; segments are fsynced when they are rotated and at `close()`
  (shutdown). A power loss or kernel crash may lose the tail of the segment being written.
- "always": additionally fsync after every appended batch (survives power loss; costs a
  disk flush per batch, which is acceptable only because the spool is used while the broker
  is down).
Acknowledged records are never rewritten: the cursor moves on (written without fsync — a
stale cursor only replays records again, which the sink drops by event_id) and a segment
file is deleted once all its records are acknowledged. After a restart the spool never
appends to old segments; a torn tail there is skipped and counted in `torn`, and so is a
damaged region in the middle (only the records it hits are lost, see `spool_format`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections import deque
from pathlib import Path
from typing import BinaryIO, Literal

from agentaudit_sdk.spool_format import (
    SpoolLocked,
    WireRecord,
    encode_record,
    fsync_dir,
    iter_records,
    lock_directory,
    read_cursor,
    scan,
    write_cursor,
)
from agentaudit_sdk.spool_memory import MemorySpool, SpoolBackend

logger = logging.getLogger("agentaudit.producers")

FsyncPolicy = Literal["rotate", "always"]
_SLOT = re.compile(r"slot-\d\d")
__all__ = ["FsyncPolicy", "Spool", "SpoolLocked"]


class _Segment:
    __slots__ = ("count", "end", "path", "read_count", "read_offset", "seq")

    def __init__(self, seq: int, path: Path, end: int = 0, count: int = 0) -> None:
        self.seq, self.path, self.end, self.count = seq, path, end, count
        self.read_offset = 0
        self.read_count = 0


class Spool:
    """Disk-backed `SpoolBackend`: bounded by `max_bytes` of segment files, survives restarts.

    Used from the client's background thread only (not thread-safe by itself).
    """

    durable = True

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_bytes: int = 256 * 1024 * 1024,
        segment_bytes: int = 16 * 1024 * 1024,
        fsync: FsyncPolicy = "rotate",
    ) -> None:
        if fsync not in ("rotate", "always"):
            raise ValueError(f"fsync must be 'rotate' or 'always', not {fsync!r}")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = max(1, min(segment_bytes, max_bytes))
        self.fsync: FsyncPolicy = fsync
        self.torn = 0
        self.bytes_used = 0
        self._pending = 0
        self._segments: deque[_Segment] = deque()
        self._writer: BinaryIO | None = None
        self._reader: tuple[_Segment, BinaryIO] | None = None
        self._peeked: list[tuple[_Segment, int]] = []
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd: int | None = lock_directory(self.directory)
        self._load()

    @classmethod
    def claim(
        cls, base_dir: str | os.PathLike[str], *, slots: int = 16, **options: object
    ) -> Spool:
        """Open the first free `slot-NN` directory under `base_dir`, trying slots that hold
        leftover segments first so a restarted process replays what a previous one left."""
        base = Path(base_dir)
        base.mkdir(parents=True, exist_ok=True)
        candidates = sorted(
            (base / f"slot-{i:02d}" for i in range(slots)),
            key=lambda path: not any(path.glob("*.seg")),
        )
        for path in candidates:
            try:
                return cls(path, **options)  # type: ignore[arg-type]
            except SpoolLocked:
                continue
        raise SpoolLocked(f"all {slots} spool slots under {base} are in use by other processes")

    def _load(self) -> None:
        cursor_seq, cursor_offset = read_cursor(self.directory)
        paths = []
        for path in self.directory.glob("*.seg"):
            if path.stem.isdigit() and path.stem.isascii():
                paths.append(path)
            else:  # not one this spool wrote ("copy.seg"): int() of its name crashed start-up
                logger.warning("agentaudit spool: ignoring %s (not a spool segment name)", path)
        paths.sort(key=lambda p: int(p.stem))
        for path in paths:
            seq = int(path.stem)
            with path.open("rb") as file:
                ends, gaps, size = scan(file)
            segment = _Segment(seq, path, ends[-1] if ends else 0, len(ends))
            if gaps:
                self.torn += gaps
                logger.warning(
                    "agentaudit spool: %d corrupt regions skipped in %s (records in them lost)",
                    gaps,
                    path,
                )
            if segment.end < size:
                self.torn += 1
                logger.warning(
                    "agentaudit spool: torn or corrupt tail in %s after %d records "
                    "(%d bytes skipped)",
                    path,
                    len(ends),
                    size - segment.end,
                )
            if seq == cursor_seq and cursor_offset in ends:
                segment.read_offset = cursor_offset
                segment.read_count = ends.index(cursor_offset) + 1
            if seq < cursor_seq or segment.read_count == segment.count:
                path.unlink()  # fully acknowledged before the restart
                continue
            self._segments.append(segment)
            self.bytes_used += size
            self._pending += segment.count - segment.read_count
        self._next_seq = (int(paths[-1].stem) + 1) if paths else 1

    def __len__(self) -> int:
        return self._pending

    def append(self, records: list[WireRecord]) -> int:
        """Append a prefix of `records`; how many. A write error (disk full, file too large,
        read-only) after part of the batch is on disk keeps that part: its count is returned
        (the rest is refused, the error logged). A write error before anything was written
        is raised."""
        written_before = self._pending
        try:
            return self._append(records)
        except OSError as exc:
            written = self._pending - written_before
            if not written:
                raise
            logger.error(
                "agentaudit spool: write failed after %d of %d records: %s",
                written,
                len(records),
                exc,
            )
            return written

    def _append(self, records: list[WireRecord]) -> int:
        buffer, count, kept = bytearray(), 0, 0
        for key, value in records:
            data = encode_record(key, value)
            if self.bytes_used + len(buffer) + len(data) > self.max_bytes:
                break
            current = self._segments[-1].end + len(buffer) if self._writer is not None else 0
            if self._writer is None or (current and current + len(data) > self.segment_bytes):
                self._write(buffer, count)
                buffer, count = bytearray(), 0
                self._rotate()
            buffer += data
            count += 1
            kept += 1
        self._write(buffer, count)
        return kept

    def _write(self, buffer: bytearray, count: int) -> None:
        if not count or self._writer is None:
            return
        segment = self._segments[-1]
        try:
            self._writer.write(buffer)
            self._writer.flush()  # in the OS page cache: survives a crash of this process
            if self.fsync == "always":
                os.fsync(self._writer.fileno())
        except OSError:
            # Disk full or I/O error: cut the partial write off so the segment stays readable,
            # and start a new segment next time.
            writer, self._writer = self._writer, None
            with contextlib.suppress(OSError):
                writer.truncate(segment.end)
            with contextlib.suppress(OSError):
                writer.close()
            if segment.end == 0:  # nothing in it: don't leave one empty file per failed batch
                self._segments.pop()
                with contextlib.suppress(OSError):
                    segment.path.unlink()
            raise
        segment.end += len(buffer)
        segment.count += count
        self.bytes_used += len(buffer)
        self._pending += count

    def _rotate(self) -> None:
        self._close_writer()
        segment = _Segment(self._next_seq, self.directory / f"{self._next_seq:012d}.seg")
        self._next_seq += 1
        self._writer = segment.path.open("ab")
        self._segments.append(segment)
        fsync_dir(self.directory)  # the new file's directory entry

    def _close_writer(self) -> None:
        if self._writer is not None:
            self._writer.flush()
            os.fsync(self._writer.fileno())
            self._writer.close()
            self._writer = None

    def read(self, max_records: int) -> list[WireRecord]:
        out: list[WireRecord] = []
        self._peeked = []
        for segment in self._segments:
            if len(out) >= max_records:
                break
            reader, reached = self._open_reader(segment), segment.read_offset
            for record, reached in iter_records(reader, segment.read_offset, segment.end):
                if record is None:  # damage: `_reconcile` counts what it took, if not yet known
                    continue
                out.append(record)
                self._peeked.append((segment, reached))
                if len(out) >= max_records:
                    break
            else:  # read to its end: count what damage since the write or scan took
                self._reconcile(segment, reached)
        return out

    def _reconcile(self, segment: _Segment, reached: int) -> None:
        readable = sum(1 for seg, _ in self._peeked if seg is segment)
        lost = segment.count - segment.read_count - readable
        if reached < segment.end:  # damage up to the end: nothing intact after it
            segment.end = reached
            if segment is self._segments[-1]:
                self._close_writer()  # never append after a corrupt region
        if lost:  # damaged since it was written or scanned (known gaps took nothing counted)
            self.torn += 1
            logger.warning("agentaudit spool: %d records unreadable in %s", lost, segment.path)
            segment.count -= lost
            self._pending -= lost

    def _open_reader(self, segment: _Segment) -> BinaryIO:
        if self._reader is None or self._reader[0] is not segment:
            self._close_reader()
            self._reader = (segment, segment.path.open("rb"))
        return self._reader[1]

    def _close_reader(self) -> None:
        if self._reader is not None:
            self._reader[1].close()
            self._reader = None

    def ack(self, count: int) -> None:
        for segment, offset in self._peeked[:count]:
            segment.read_offset = offset
            segment.read_count += 1
            self._pending -= 1
        self._peeked = []
        while self._segments and self._segments[0].read_count >= self._segments[0].count:
            segment = self._segments[0]
            if segment is self._segments[-1] and self._writer is not None:
                if segment.end == 0:
                    break  # fresh writer segment, nothing to delete
                self._close_writer()
            if self._reader is not None and self._reader[0] is segment:
                self._close_reader()
            self.bytes_used -= segment.path.stat().st_size
            segment.path.unlink()
            self._segments.popleft()
        self._write_cursor()

    def _write_cursor(self) -> None:
        head = self._segments[0] if self._segments else None
        try:
            write_cursor(self.directory, head.seq if head else 0, head.read_offset if head else 0)
        except OSError as exc:  # a stale cursor only means replaying acknowledged records again
            logger.warning("agentaudit spool: cannot write cursor: %s", exc)

    def for_child(self) -> SpoolBackend:
        """In a forked child: a free slot next to this one (`claim`), or a `MemorySpool` if
        this spool was not claimed or no slot is free. The parent's files and lock stay the
        parent's: the child closes only its copies of their descriptors (a `flock` lasts
        while any copy is open, so the parent keeps the lock)."""
        if self._writer is not None:
            self._writer.close()  # flushed after every append: nothing buffered to write
            self._writer = None
        self._close_reader()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        options = {"max_bytes": self.max_bytes, "segment_bytes": self.segment_bytes}
        try:
            if _SLOT.fullmatch(self.directory.name):
                return Spool.claim(self.directory.parent, fsync=self.fsync, **options)
        except OSError as exc:
            logger.warning("agentaudit spool: no slot for a forked child (%s): memory", exc)
        return MemorySpool(self.max_bytes)

    def adopt_orphan(self) -> Spool | None:
        """Another slot under this one's base directory holding records that no process owns,
        opened for replay (its damage counted in this spool's `torn`); None if there is none
        or this spool was not claimed. `claim` adopts leftovers only by reusing their slot, so
        slots of a larger set of processes than the one started again (fewer workers after a
        redeploy, a Pool whose children spooled and ended) were never replayed."""
        if not _SLOT.fullmatch(self.directory.name):
            return None
        for path in sorted(self.directory.parent.iterdir()):
            if path == self.directory or not _SLOT.fullmatch(path.name):
                continue
            if not any(path.glob("*.seg")):
                continue
            try:
                orphan = Spool(
                    path,
                    max_bytes=self.max_bytes,
                    segment_bytes=self.segment_bytes,
                    fsync=self.fsync,
                )
            except OSError:  # SpoolLocked: a live process owns it; or unreadable
                continue
            self.torn += orphan.torn
            if len(orphan):
                return orphan
            orphan.close()
        return None

    def close(self) -> None:
        """fsync the segment being written and release the directory lock; idempotent."""
        self._close_writer()
        self._close_reader()
        if self._lock_fd is not None:
            fsync_dir(self.directory)
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None
