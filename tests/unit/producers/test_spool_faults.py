"""The disk spool under faults: a tear at every byte of the last record (kill -9 while
writing), a write that fails half way through a batch (disk full, file size limit), and what
the client's stats say about it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from agentaudit_sdk.spool import Spool
from agentaudit_sdk.spool_format import encode_record


def recs(start: int, stop: int) -> list[tuple[bytes, bytes]]:
    return [(b"acme", b"event-%05d" % i) for i in range(start, stop)]


def drain(spool: Spool) -> list[tuple[bytes, bytes]]:
    out = []
    while len(spool):
        got = spool.read(3)
        out += got
        spool.ack(len(got))
    return out


def _spooled(where: Path, n: int) -> tuple[Path, bytes]:
    """A closed spool of `n` records in one segment: the segment and its bytes."""
    spool = Spool(where)
    spool.append(recs(0, n))
    spool.close()
    (segment,) = where.glob("*.seg")
    return segment, segment.read_bytes()


def test_a_tear_at_any_byte_of_the_last_record_loses_only_that_record(tmp_path: Path) -> None:
    segment, data = _spooled(tmp_path / "src", 5)
    last = len(data) - len(encode_record(*recs(4, 5)[0]))
    for cut in range(last, len(data)):
        copy = tmp_path / f"cut-{cut}"
        shutil.copytree(tmp_path / "src", copy)
        (copy / segment.name).write_bytes(data[:cut])
        spool = Spool(copy)
        assert (len(spool), spool.torn) == (4, int(cut > last)), cut
        spool.append(recs(5, 6))  # goes to a new segment, after the tear
        assert drain(spool) == recs(0, 4) + recs(5, 6), cut
        spool.close()


# Runs in a child: RLIMIT_FSIZE applies to the whole process. Python ignores SIGXFSZ, so a
# write past the limit fails with EFBIG, as one on a full disk fails with ENOSPC.
CHILD = """
import json, resource, sys
from agentaudit_sdk import Client, InMemoryTransport
from agentaudit_sdk.spool import Spool

transport = InMemoryTransport(available=False)
spool = Spool(sys.argv[1], segment_bytes=1500)
client = Client(transport, tenant_id="acme", agent_id="bot", spool=spool, batch_size=3,
                reconnect_backoff=(0.01, 0.02))
resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))
client.error("c", "E", message="small 1")  # ~550 bytes each: both fit the first segment
client.error("c", "E", message="small 2")
client.error("c", "E", message="big " + "z" * 2000)  # its own segment: over the size limit
assert client.flush(10)
spooled = client.stats
files = len(list(spool.directory.glob("*.seg")))  # no empty file left by the failed write
transport.available = True
assert client.flush(10, delivered=True)
delivered = client.stats
client.shutdown(5)
print(json.dumps([files, spooled.spooled, spooled.dropped_spool_full, spooled.spool_depth,
                  delivered.sent, delivered.spool_depth, len(transport.records)]))
"""


def test_a_write_failing_half_way_keeps_and_counts_what_is_on_disk(tmp_path: Path) -> None:
    """Before, the spool raised and the client counted the whole batch as dropped, while the
    part already written was replayed and counted as sent as well (5 events of 3)."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CHILD), str(tmp_path / "spool")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "File too large" in done.stderr  # logged, not silent
    files, spooled, dropped, depth, sent, depth_after, records = json.loads(done.stdout)
    assert (files, spooled, dropped, depth) == (1, 2, 1, 2)
    assert (sent, depth_after, records) == (2, 0, 2)


def test_a_corrupt_byte_anywhere_in_a_record_loses_that_record_only(tmp_path: Path) -> None:
    """Before, everything after the damage in its segment was lost too (up to 16 MB)."""
    segment, data = _spooled(tmp_path / "src", 6)
    size = len(encode_record(*recs(0, 1)[0]))
    for at in range(2 * size, 3 * size):  # every byte of record 2: length, CRC, key, value
        copy = tmp_path / f"flip-{at}"
        shutil.copytree(tmp_path / "src", copy)
        damaged = bytearray(data)
        damaged[at] ^= 0xFF
        (copy / segment.name).write_bytes(bytes(damaged))
        spool = Spool(copy)
        assert (len(spool), spool.torn) == (5, 1), at
        assert drain(spool) == recs(0, 2) + recs(3, 6), at
        spool.close()


def test_damage_after_the_scan_is_counted_and_the_spool_still_drains(tmp_path: Path) -> None:
    """Records damaged on disk while the process runs are found when read, counted as torn,
    and the spool's depth drops to zero (it must not wait for them forever)."""
    spool = Spool(tmp_path)
    spool.append(recs(0, 6))
    (segment,) = tmp_path.glob("*.seg")
    size = len(encode_record(*recs(0, 1)[0]))
    with segment.open("r+b") as file:
        file.seek(size + 12)
        file.write(b"X")  # inside record 1's value
    assert drain(spool) == recs(0, 1) + recs(2, 6)
    assert (len(spool), spool.torn) == (0, 1)
    spool.append(recs(6, 7))
    assert drain(spool) == recs(6, 7)
    spool.close()


def test_zeroed_blocks_are_skipped(tmp_path: Path) -> None:
    """A crash can leave a file extended with zeros (delayed allocation) or a zeroed block:
    the records around them are kept."""
    records = [encode_record(*record) for record in recs(0, 6)]
    zeros = bytes(1 << 20)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "000000000001.seg").write_bytes(b"".join(records[:3]) + zeros)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "000000000001.seg").write_bytes(
        b"".join(records[:3]) + zeros + b"".join(records[3:])
    )
    tail, middle = Spool(tmp_path / "a"), Spool(tmp_path / "b")
    assert (len(tail), tail.torn, drain(tail)) == (3, 1, recs(0, 3))
    assert (len(middle), middle.torn, drain(middle)) == (6, 1, recs(0, 6))
    tail.close()
    middle.close()
