"""The log guard's decisions: is the log read the one the store's offsets came from?"""

from dataclasses import dataclass

from agentaudit.sink.logguard import Anchor, LogGuard
from agentaudit.sink.processor import SinkProcessor
from agentaudit.sink.rows import INGEST_COLUMNS, Source
from agentaudit_schemas.pricing import load_pricing
from tests.factories import event_dict, wire


@dataclass
class Rec:
    offset: int
    value: bytes | None
    timestamp: int = 1_700_000_000_000


def recs(start: int, n: int, tag: str = "m") -> list[Rec]:
    return [Rec(start + i, f"{tag}{start + i}".encode()) for i in range(n)]


def test_assignment_reads_the_anchor_first_and_goes_on_when_it_matches() -> None:
    guard = LogGuard()
    anchor = Anchor(9, event_id="0190A5B2-0000-7000-8000-000000000009")
    assert guard.assign(0, 10, anchor) == 9
    assert guard.check(0, recs(3, 2)).records == ()  # fetched before the seek: dropped
    chunk = [Rec(9, b'{"event_id":"0190a5b2-0000-7000-8000-000000000009"}'), *recs(10, 3)]
    decision = guard.check(0, chunk)
    assert decision.reset is None and [r.offset for r in decision.records] == [10, 11, 12]


def test_another_message_at_the_anchor_is_a_replaced_log() -> None:
    guard = LogGuard()
    guard.assign(0, 10, Anchor(9, event_id="0190a5b2-0000-7000-8000-000000000009"))
    decision = guard.check(0, [Rec(9, b'{"event_id":"0190a5b2-0000-7000-8000-00000000ffff"}')])
    assert decision.reset is not None and not decision.records


def test_dead_letter_anchor_ahead_of_the_events_seeks_back_after_matching() -> None:
    guard = LogGuard()
    assert guard.assign(0, 4, Anchor(7, timestamp_ms=5, value_prefix=b"{bro")) == 7
    assert guard.check(0, [Rec(7, b"{broken", timestamp=6)]).seek == 4
    assert [r.offset for r in guard.check(0, recs(4, 2)).records] == [4, 5]
    guard.assign(1, 4, Anchor(7, timestamp_ms=5, value_prefix=b"{bro"))
    assert guard.check(1, [Rec(7, b"{broken", timestamp=9)]).reset is not None  # another time


def test_out_of_range_beyond_the_end_is_a_reset_before_the_start_is_retention() -> None:
    guard = LogGuard()
    guard.assign(0, 100, Anchor(99, event_id="x"))
    assert guard.out_of_range(0, 99, log_start=0).reset is not None
    guard.assign(1, 100, Anchor(99, event_id="x"))
    gone = guard.out_of_range(1, 99, log_start=500)
    assert gone.reset is None and gone.seek == 500 and gone.note is not None
    assert [r.offset for r in guard.check(1, recs(500, 1)).records] == [500]


def test_offsets_going_backwards_mid_run_verify_the_last_message_read() -> None:
    guard = LogGuard()
    guard.assign(0, 0, None)
    assert len(guard.check(0, recs(0, 5)).records) == 5
    back = guard.check(0, recs(1, 2, tag="new"))  # position moved back under us
    assert back.seek == 4 and not back.records
    assert guard.check(0, [Rec(4, b"m4")]).records == ()  # same log: nothing delivered twice
    assert [r.offset for r in guard.check(0, recs(5, 1)).records] == [5]
    guard.check(0, recs(2, 1))  # backwards again; this time offset 5 holds something else
    assert guard.check(0, [Rec(5, b"other")]).reset is not None


def test_a_gap_in_offsets_is_delivered_and_a_revoked_partition_dropped() -> None:
    guard = LogGuard()
    guard.assign(0, 0, None)
    assert [r.offset for r in guard.check(0, recs(3, 2)).records] == [3, 4]
    guard.clear()
    assert guard.check(0, recs(5, 1)).records == ()


def test_new_epoch_starts_fresh_watermarks_and_continues_chains() -> None:
    p = SinkProcessor(load_pricing(), dedup_capacity=1000)
    p.recover({0: 50}, {}, {("acme", 0): (7, "e" * 64)}, [], {0: 2})
    assert p.new_epoch(0) == 3 and p.resume_offset(0) == 0
    p.add(Source("events", 0, 0, 0, b"acme", p.epochs[0]), wire(event_dict(tenant="acme")))
    batch = p.take()
    row = dict(zip(INGEST_COLUMNS, batch.events[0], strict=True))
    assert (row["log_epoch"], row["kafka_offset"], row["chain_seq"]) == (3, 0, 8)
    assert row["prev_hash"] == "e" * 64
    assert "0@3:0-0" in batch.dedup_token("events", "events")
