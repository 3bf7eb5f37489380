"""The on-disk spool: order, bounds, torn tails, restarts, cursor, locking."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentaudit_sdk.spool import Spool, SpoolLocked
from agentaudit_sdk.spool_format import encode_record
from agentaudit_sdk.spool_memory import MemorySpool


def recs(start: int, stop: int) -> list[tuple[bytes, bytes]]:
    return [(b"acme", b"event-%05d" % i) for i in range(start, stop)]


def drain(spool: Spool | MemorySpool, batch: int = 7) -> list[tuple[bytes, bytes]]:
    out = []
    while len(spool):
        got = spool.read(batch)
        assert got
        out += got
        spool.ack(len(got))
    return out


def segments(path: Path) -> list[Path]:
    return sorted(path.glob("*.seg"))


def test_append_read_in_order_across_segments(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=200)
    assert spool.append(recs(0, 50)) == 50
    assert len(segments(tmp_path)) > 3 and len(spool) == 50
    assert spool.read(3) == recs(0, 3) and spool.read(3) == recs(0, 3)  # read does not consume
    assert drain(spool) == recs(0, 50)
    assert len(spool) == 0 and segments(tmp_path) == [] and spool.bytes_used == 0
    spool.close()


def test_interleaved_append_and_replay_keep_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=300)
    spool.append(recs(0, 10))
    got = spool.read(4)
    spool.ack(4)
    spool.append(recs(10, 20))
    got += drain(spool, batch=3)
    assert got == recs(0, 20)
    spool.close()


def test_bound_refuses_the_tail_of_a_batch(tmp_path: Path) -> None:
    size = len(encode_record(*recs(0, 1)[0]))
    spool = Spool(tmp_path, max_bytes=size * 10, segment_bytes=size * 4)
    assert spool.append(recs(0, 8)) == 8
    assert spool.append(recs(8, 14)) == 2  # a prefix is kept, the rest refused
    assert len(spool) == 10 and spool.bytes_used <= spool.max_bytes
    spool.ack(len(spool.read(4)))  # the first full segment is freed
    assert spool.append(recs(14, 20)) == 4
    assert drain(spool) == recs(4, 10) + recs(14, 18)
    spool.close()


def test_memory_spool_has_the_same_contract() -> None:
    spool = MemorySpool(max_bytes=10 * (4 + 11 + 64))
    assert spool.append(recs(0, 15)) == 10
    assert spool.read(2) == recs(0, 2)
    assert drain(spool) == recs(0, 10) and spool.bytes_used == 0
    assert MemorySpool(max_bytes=0).append(recs(0, 1)) == 0


def test_restart_replays_what_is_left(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=250)
    spool.append(recs(0, 30))
    spool.ack(len(spool.read(12)))
    spool.close()
    reopened = Spool(tmp_path, segment_bytes=250)
    assert len(reopened) == 18  # the cursor skips what was acknowledged before the restart
    reopened.append(recs(30, 35))  # new records go after the old ones
    assert drain(reopened) == recs(12, 35)
    reopened.close()
    assert len(Spool(tmp_path)) == 0


def test_stale_cursor_replays_instead_of_losing(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append(recs(0, 5))
    spool.close()
    (tmp_path / "cursor").write_text("1 3\n")  # not a record boundary: ignored
    reopened = Spool(tmp_path)
    assert drain(reopened) == recs(0, 5)
    reopened.close()


def test_torn_tail_is_detected_skipped_and_counted(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append(recs(0, 5))
    spool.close()
    (segment,) = segments(tmp_path)
    whole = encode_record(b"acme", b"event-99999")
    with segment.open("ab") as file:  # a crash in the middle of writing one more record
        file.write(whole[: len(whole) // 2])
    reopened = Spool(tmp_path)
    assert reopened.torn == 1 and len(reopened) == 5
    reopened.append(recs(5, 7))  # never appended after the tear: a new segment
    assert drain(reopened) == recs(0, 7)
    reopened.close()


def test_a_corrupt_record_costs_only_itself(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append(recs(0, 4))
    spool.close()
    (segment,) = segments(tmp_path)
    data = bytearray(segment.read_bytes())
    data[len(encode_record(*recs(0, 1)[0])) * 2 + 12] ^= 0xFF  # flip a byte in record #2
    segment.write_bytes(bytes(data))
    reopened = Spool(tmp_path)
    assert reopened.torn == 1 and drain(reopened) == recs(0, 2) + recs(3, 4)
    reopened.close()


def test_fsync_always_and_policy_validation(tmp_path: Path) -> None:
    spool = Spool(tmp_path, fsync="always")
    assert spool.append(recs(0, 3)) == 3
    assert drain(spool) == recs(0, 3)
    spool.close()
    with pytest.raises(ValueError):
        Spool(tmp_path / "x", fsync="sometimes")  # type: ignore[arg-type]


def test_one_owner_per_directory_and_slots(tmp_path: Path) -> None:
    first = Spool(tmp_path / "d")
    with pytest.raises(SpoolLocked):
        Spool(tmp_path / "d")
    first.close()
    Spool(tmp_path / "d").close()  # released on close
    a = Spool.claim(tmp_path / "base")
    b = Spool.claim(tmp_path / "base")
    assert a.directory != b.directory
    b.append(recs(0, 2))
    a.close()
    b.close()
    again = Spool.claim(tmp_path / "base")  # leftovers are adopted first
    assert again.directory == b.directory and len(again) == 2
    again.close()


def test_a_foreign_seg_file_is_ignored_not_a_crash(tmp_path: Path) -> None:
    """A file in the spool directory named like a segment but not numbered ('copy.seg', left by
    an operator or a backup tool) made Spool() raise ValueError, so Client.from_settings
    crashed the agent at every start (it falls back to memory only on OSError)."""
    first = Spool(tmp_path / "slot-00")
    first.append([(b"k", b"v1")])
    first.close()
    (tmp_path / "slot-00" / "copy.seg").write_bytes(b"junk")
    again = Spool.claim(tmp_path)
    assert again.directory.name == "slot-00" and again.read(10) == [(b"k", b"v1")]
    again.close()
