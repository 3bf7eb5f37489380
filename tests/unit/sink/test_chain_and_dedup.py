import hashlib

from agentaudit.sink.chain import ChainHeads
from agentaudit.sink.dedup import RecentIds
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
