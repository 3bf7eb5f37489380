"""On-disk layout of a spool directory: segment record format, cursor file, lock.

A segment file is a sequence of records, each

    u32 body length | u32 CRC32(body) | body = u16 key length | key | value

big-endian. A crash can leave a torn record at the tail of the segment being written; the
reader stops at the first record that is short, has an absurd length or fails its CRC, and
the caller compares where it stopped with the file size to detect (and count) the tear.
"""

from __future__ import annotations

import fcntl
import os
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


def encode_record(key: bytes, value: bytes) -> bytes:
    """One record's bytes on disk."""
    body = KEY_LEN.pack(len(key)) + key + value
    return HEADER.pack(len(body), zlib.crc32(body)) + body


def iter_records(
    file: BinaryIO, offset: int, end: int | None = None
) -> Iterator[tuple[WireRecord, int]]:
    """Yield (record, offset just after it) from `offset` until `end`, the end of the file, or
    the first torn/corrupt record — whichever comes first."""
    file.seek(offset)
    while end is None or offset < end:
        header = file.read(HEADER.size)
        if len(header) < HEADER.size:
            return
        length, crc = HEADER.unpack(header)
        if not KEY_LEN.size <= length <= MAX_BODY:
            return
        body = file.read(length)
        if len(body) < length or zlib.crc32(body) != crc:
            return
        (key_len,) = KEY_LEN.unpack_from(body)
        if KEY_LEN.size + key_len > length:
            return
        offset += HEADER.size + length
        key_end = KEY_LEN.size + key_len
        yield (body[KEY_LEN.size : key_end], body[key_end:]), offset


def scan(file: BinaryIO) -> tuple[list[int], int]:
    """Offsets just after each valid record from the start, and the file size. The last
    offset (or 0) < size means the tail is torn or corrupt."""
    ends = [end for _, end in iter_records(file, 0)]
    file.seek(0, 2)
    return ends, file.tell()


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
