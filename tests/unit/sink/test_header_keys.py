"""A fetched record whose header key is not UTF-8 is read, not fatal (`agentaudit_sdk.header_keys`),
through aiokafka's own fetcher code (`PartitionRecords`) over real record batch bytes."""

from __future__ import annotations

import subprocess
import sys

import pytest
from aiokafka.consumer.fetcher import PartitionRecords
from aiokafka.record.default_records import _DefaultRecordBatchBuilderPy
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.structs import TopicPartition

from agentaudit_sdk.header_keys import LenientMemoryRecords

LZ4 = 0x03


class _RawKey(str):
    """A header key whose bytes on the wire are not UTF-8 (no Python client writes one; any
    producer on the wire can, and the broker keeps it)."""

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return b"\xff\xfebad"


def _batch(base: int, compression: int, headers: list[tuple[str, bytes | None]]) -> bytes:
    builder = _DefaultRecordBatchBuilderPy(2, compression, 0, -1, -1, -1, 1 << 20)
    builder.append(0, 1_700_000_000_000, b"acme", b"first", [("ok", b"1")])
    builder.append(1, 1_700_000_000_000, b"acme", b"second", headers)
    raw = bytearray(builder.build())
    raw[0:8] = base.to_bytes(8, "big")  # the broker's offset of the batch's first record
    return bytes(raw)


def _read(records: object) -> list[tuple[int, bytes, tuple[tuple[str, bytes | None], ...]]]:
    part = PartitionRecords(TopicPartition("t", 0), records, [], 0, None, None, True, 0)
    return [(r.offset, r.value, r.headers) for r in part]


@pytest.mark.parametrize("compression", [0, LZ4])
def test_a_header_key_that_is_not_utf8_is_read_escaped(compression: int) -> None:
    # Two batches: the bad key in the second, so the lenient reader must find it by position.
    raw = _batch(0, compression, [("fine", b"x")])
    raw += _batch(2, compression, [(_RawKey("k"), b"v"), ("null", None)])
    with pytest.raises(UnicodeDecodeError):  # aiokafka as it is: the sink died here
        _read(MemoryRecords(raw))
    assert _read(LenientMemoryRecords(raw)) == [
        (0, b"first", (("ok", b"1"),)),
        (1, b"second", (("fine", b"x"),)),
        (2, b"first", (("ok", b"1"),)),
        (3, b"second", (("\\xff\\xfebad", b"v"), ("null", None))),
    ]


def test_the_stream_jobs_consumer_reads_leniently_too() -> None:
    # The jobs run in their own process and import no sink module: with the reader installed
    # by the sink's clients only, their partition stalled on such a record (0 of 4 events
    # applied in 40 s; 4 with it). A fresh interpreter, as the jobs' process.
    code = (
        "import aiokafka.consumer.fetcher as f, stream_jobs.runtime.consumer\n"
        "from agentaudit_sdk.header_keys import LenientMemoryRecords\n"
        "assert f.MemoryRecords is LenientMemoryRecords\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_an_sdk_consumer_reads_leniently() -> None:
    # The kill-switch listener (SDK, in the agent's process: no agentaudit module) re-reads the
    # control topic from its start after a failure: on aiokafka's strict reader one such
    # record made it blind for good (a block published after it: not honoured in 20 s).
    code = (
        "import asyncio, sys\n"
        "from agentaudit_sdk import kafka_config\n"
        "assert 'aiokafka' not in sys.modules  # importing the SDK stays cheap\n"
        "async def make():\n"
        "    conn = kafka_config.KafkaConnection(bootstrap='127.0.0.1:1')\n"
        "    kafka_config.consumer(conn, 'control')\n"
        "asyncio.run(make())\n"
        "import aiokafka.consumer.fetcher as f\n"
        "from agentaudit_sdk.header_keys import LenientMemoryRecords\n"
        "assert f.MemoryRecords is LenientMemoryRecords\n"
        "assert not any(m.startswith('agentaudit.') for m in sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
