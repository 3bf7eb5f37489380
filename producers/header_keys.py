"""Records whose header keys are not UTF-8 are read, not fatal to the consumer.

Kafka's protocol types a header key as a string, but a broker stores whatever bytes a producer
wrote (the local broker took `b"\\xff\\xfe"` as a key). aiokafka decodes every key as strict
UTF-8 while it unpacks a fetched batch, so one such record raised `UnicodeDecodeError` out of
`getmany`: the sink died before it saw any record of that batch, and again at the same offset
after every restart (a crash loop; the partition's events, valid ones included, never stored);
the stream jobs' partition stalled; and the SDK's kill-switch listener, which reads the control
topic again from its start after each failure, never saw a block published after such a
record (one record made every agent's kill switch blind).

`install` (called by `kafka_config.consumer` and by `agentaudit.kafka_clients`, idempotent)
makes aiokafka's fetcher unpack batches through `LenientMemoryRecords`: batches
are read by aiokafka's own (C) reader as before; only a batch whose reading fails on a header
key is read again by aiokafka's pure-Python reader, with undecodable bytes of a key kept as
`\\xNN` escapes (`backslashreplace`). Its records then reach the sink as any others (a valid
event is stored; a dead letter keeps the escaped key with its headers; a control record is
applied). No cost per record otherwise. Importing this module imports aiokafka: the SDK does
so only when it makes a consumer.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

import aiokafka.consumer.fetcher as _fetcher
from aiokafka.record.default_records import _DefaultRecordBatchPy
from aiokafka.record.memory_records import MemoryRecords

_LOG_OVERHEAD = 12
"""A record batch's framing: base offset (int64) then the length of the rest (int32)."""


class _KeyBytes(bytes):
    """A header key's bytes: decoded leniently (the only `.decode` the Python reader calls)."""

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return bytes.decode(self, encoding, "backslashreplace")


class _LenientBuffer(bytearray):
    """A batch's buffer whose slices decode leniently (key and value slices are copied into
    plain `bytes` by the reader; integers and varints read single bytes)."""

    def __getitem__(self, index: Any) -> Any:
        got = bytearray.__getitem__(self, index)
        return _KeyBytes(got) if isinstance(index, slice) else got


class _LenientBatch(_DefaultRecordBatchPy):  # type: ignore[misc]
    """aiokafka's pure-Python v2 batch reader over a `_LenientBuffer`."""

    def __iter__(self) -> _LenientBatch:
        super().__iter__()  # decompresses into a new buffer, if compressed
        buffer: bytearray = self._buffer  # type: ignore[has-type]
        self._buffer = _LenientBuffer(buffer)
        return self


def _batch_slice(raw: bytes, index: int) -> bytes:
    """The `index`-th record batch of a fetch response's records."""
    pos = 0
    for _ in range(index):
        pos += _LOG_OVERHEAD + struct.unpack_from(">i", raw, pos + 8)[0]
    end = pos + _LOG_OVERHEAD + struct.unpack_from(">i", raw, pos + 8)[0]
    return raw[pos:end]


class _Batch:
    """One batch of `LenientMemoryRecords`: aiokafka's, read again leniently if its reading
    fails on a header key."""

    def __init__(self, batch: Any, raw: bytes, index: int) -> None:
        self._batch, self._raw, self._index = batch, raw, index

    def __getattr__(self, name: str) -> Any:
        return getattr(self._batch, name)

    def __next__(self) -> Any:  # a control batch's marker (the fetcher calls next on it)
        return next(self._batch)

    def __iter__(self) -> Iterator[Any]:
        try:
            return iter(list(self._batch))
        except UnicodeDecodeError:
            return iter(_LenientBatch(_batch_slice(self._raw, self._index)))


class LenientMemoryRecords:
    """aiokafka's `MemoryRecords` over a fetch response's records, batch by batch `_Batch`."""

    def __init__(self, raw: bytes) -> None:
        self._raw = raw
        self._records = MemoryRecords(raw)
        self._index = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._records, name)

    def has_next(self) -> bool:
        return bool(self._records.has_next())

    def next_batch(self) -> _Batch | None:
        batch = self._records.next_batch()
        if batch is None:
            return None
        self._index += 1
        return _Batch(batch, self._raw, self._index - 1)


def install() -> None:
    """Have aiokafka's consumers in this process unpack fetched records leniently."""
    _fetcher.MemoryRecords = LenientMemoryRecords
