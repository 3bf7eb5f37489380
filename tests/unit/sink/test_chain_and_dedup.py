import hashlib

from agentaudit.sink.chain import ChainHeads
from agentaudit.sink.dedup import ContentDigest, RecentIds, Seen
from agentaudit_schemas.canonical import GENESIS_HASH


def test_chain_is_gap_free_per_tenant_and_partition_and_links_hashes() -> None:
    heads = ChainHeads()
    a1 = heads.append("acme", 0, b"one")
    b1 = heads.append("globex", 0, b"x")
    a2 = heads.append("acme", 0, b"two")
    other = heads.append(
        "acme", 3, b"elsewhere"
    )  # the same tenant on another partition: its own chain
    assert (a1.seq, a2.seq, b1.seq, other.seq) == (1, 2, 1, 1)
    assert other.prev_hash == GENESIS_HASH and heads.head("acme", 0) == (2, a2.row_hash)
    assert a1.prev_hash == GENESIS_HASH
    assert a1.row_hash == hashlib.sha256(GENESIS_HASH.encode() + b"one").hexdigest()
    assert a2.prev_hash == a1.row_hash


def test_chain_continues_from_recovered_head() -> None:
    heads = ChainHeads()
    heads.load({("acme", 2): (41, "f" * 64)})
    link = heads.append("acme", 2, b"next")
    assert link.seq == 42 and link.prev_hash == "f" * 64
    assert heads.append("acme", 1, b"first").seq == 1


def test_recent_ids_detects_duplicates_within_capacity_and_forgets_oldest() -> None:
    recent = RecentIds(capacity=2)
    assert recent.add("a") and recent.add("b")
    assert not recent.add("a")
    assert recent.add("c")  # evicts "a"
    assert "a" not in recent and len(recent) == 2
    recent.reset(["x", "y", "z"])
    assert "x" not in recent and "y" in recent and "z" in recent and len(recent) == 2


def test_content_digest_is_stable_keyed_and_never_unknown() -> None:
    # Stored with the row and compared after a restart: a value pinned here, not Python's
    # per-process `hash`. Keyed digests differ from unkeyed ones; 0 means "unknown".
    assert ContentDigest()(b'{"a":1}') == 1320902695361816254
    assert ContentDigest(b"k" * 32)(b'{"a":1}') == 9031867449261008599
    window = RecentIds(capacity=4)
    window.reset(["acme/1", "acme/2"], [0, 7])
    assert window.seen("acme/1", 5) is Seen.REPEAT  # stored before migration 0023: by id
    assert window.seen("acme/2", 7) is Seen.REPEAT
    assert window.seen("acme/2", 8) is Seen.CONFLICT
