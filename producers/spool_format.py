"""On-disk layout of a spool directory: segment record format, cursor file, lock.

A segment file is a sequence of records, each

    u32 body length | u32 CRC32(body) | body = u16 key length | key | value

big-endian. A crash can leave a torn record at the tail of the segment being written; the
reader stops at the first record that is short, has an absurd length or fails its CRC, and
the caller compares where it stopped with the file size to detect (and count) the tear.
Damage in the middle (a corrupt byte) costs only the records it hits: the reader finds the
next record that reads back intact and goes on from there. A length field below MAX_BODY
starts with a zero byte, which JSON text (the values) and tenant ids (the keys) never hold,
so only record headers are candidates, and the CRC decides.
"""

from __future__ import annotations

import fcntl
import os
import re
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

HEADER = struct.Struct(">II")
KEY_LEN = struct.Struct(">H")
MAX_BODY = 16 * 1024 * 1024
"""Larger than any event (MAX_EVENT_BYTES) by far: a bigger length field is torn garbage."""

WireRecord = tuple[bytes, bytes]
_CANDIDATE = re.compile(rb"\x00(?!\x00{3})")
"""Where a record may start: a length's zero top byte, but not inside a run of zeros (a file
extended with zeros by a crash is skipped in C, not byte by byte)."""


def encode_record(key: bytes, value: bytes) -> bytes:
    """One record's bytes on disk."""
    body = KEY_LEN.pack(len(key)) + key + value
    return HEADER.pack(len(body), zlib.crc32(body)) + body


def iter_records(
    file: BinaryIO, offset: int, end: int | None = None
) -> Iterator[tuple[WireRecord | None, int]]:
    """Yield (record, offset just after it) from `offset` until `end` or the end of the file.
    A damaged region followed by an intact record is yielded as (None, offset of that
    record); damage with nothing intact after it (a torn tail) ends the iteration."""
    file.seek(offset)
    while end is None or offset < end:
        header = file.read(HEADER.size)
        if len(header) == HEADER.size:
            length, crc = HEADER.unpack(header)
            body = file.read(length) if KEY_LEN.size <= length <= MAX_BODY else None
            if body is not None and len(body) == length and zlib.crc32(body) == crc:
                key_end = KEY_LEN.size + KEY_LEN.unpack_from(body)[0]
                if key_end <= length:
                    offset += HEADER.size + length
                    yield (body[KEY_LEN.size : key_end], body[key_end:]), offset
                    continue
        resumed = _next_intact(file, offset + 1, end)
        if resumed is None:
            return
        offset = resumed
        file.seek(offset)
        yield None, offset


def _intact(header: bytes | memoryview, body: bytes | memoryview) -> bool:
    length, crc = HEADER.unpack(header)
    if len(body) != length or not KEY_LEN.size <= length <= MAX_BODY:
        return False
    (key_len,) = KEY_LEN.unpack_from(body)
    return KEY_LEN.size + key_len <= length and zlib.crc32(body) == int(crc)


def _next_intact(file: BinaryIO, start: int, end: int | None) -> int | None:
    """The offset of the first intact record at or after `start` (and before `end`)."""
    file.seek(start)
    raw = file.read(-1 if end is None else max(0, end - start))
    data = memoryview(raw)  # slices without copies
    for match in _CANDIDATE.finditer(raw):
        at = match.start()
        if at + HEADER.size > len(raw):
            return None
        header = data[at : at + HEADER.size]
        body = at + HEADER.size
        if _intact(header, data[body : body + HEADER.unpack(header)[0]]):
            return start + at
    return None


def scan(file: BinaryIO) -> tuple[list[int], int, int]:
    """Offsets just after each intact record from the start, the number of damaged regions
    skipped between them, and the file size. The last offset (or 0) < size means the tail
    is torn or corrupt."""
    ends: list[int] = []
    gaps = 0
    for record, end in iter_records(file, 0):
        if record is None:
            gaps += 1
        else:
            ends.append(end)
    file.seek(0, 2)
    return ends, gaps, file.tell()


class SpoolLocked(OSError):
    """Another process (or another Spool object) owns this spool directory."""


def lock_directory(directory: Path) -> int:
    """Take the directory's exclusive `flock` (released when the returned fd is closed)."""
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise SpoolLocked(f"spool directory {directory} is in use by another process") from None
    return fd


def read_cursor(directory: Path) -> tuple[int, int]:
    """(segment number, byte offset) of the oldest unacknowledged record; (0, 0) if unknown."""
    try:
        seq, offset = (directory / "cursor").read_text().split()
        return int(seq), int(offset)
    except (OSError, ValueError):
        return 0, 0


def write_cursor(directory: Path, seq: int, offset: int) -> None:
    """Replace the cursor atomically (rename); not fsynced, see the spool's durability notes."""
    tmp = directory / "cursor.tmp"
    tmp.write_text(f"{seq} {offset}\n")
    os.replace(tmp, directory / "cursor")


def fsync_dir(directory: Path) -> None:
    """Make file creations/deletions in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
