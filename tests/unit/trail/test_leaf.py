"""Leaf format v1: exact bytes, what it binds, strict decoding, cost formatting."""

from __future__ import annotations

import hashlib
import time
from decimal import Decimal

import pytest

from agentaudit.trail import leaf as lf
from agentaudit.trail.merkle import leaf_hash

PAYLOAD = b'{"event_id":"e1","tenant_id":"acme","type":"llm_call"}'
ROW = {
    "tenant_id": "acme",
    "partition": 3,
    "chain_seq": 7,
    "cost_usd": Decimal("0.001250000"),
    "priced": True,
    "pricing_version": "2026-05-01",
    "payload": PAYLOAD,
}


def _enc(**override: object) -> bytes:
    return lf.encode_leaf(**{**ROW, **override})  # type: ignore[arg-type]


def test_known_answer_bytes_written_from_the_format_text() -> None:
    """The documented layout, spelled out by hand: what an independent verifier rebuilds."""

    def f(b: bytes) -> bytes:
        return len(b).to_bytes(4, "big") + b

    expected = (
        f(b"agentaudit.leaf.v1")
        + f(b"acme")
        + f((3).to_bytes(4, "big"))
        + f((7).to_bytes(8, "big"))
        + f(b"0.001250000")
        + f(b"\x01")
        + f(b"2026-05-01")
        + f(PAYLOAD)
    )
    leaf = _enc()
    assert leaf == expected
    assert leaf_hash(leaf) == hashlib.sha256(b"\x00" + expected).digest()
    # Pinned so that any change of the format is deliberate (bump LEAF_VERSION then).
    assert leaf_hash(leaf).hex() == (
        "56deb541129d454cf21a232ee7a3d524a3db5c87ea43def4194d8a4399032b50"
    )


@pytest.mark.parametrize(
    "field,other",
    [
        ("tenant_id", "acme2"),  # two tenants' rows swapped
        ("partition", 4),  # moved to another chain of the same tenant
        ("chain_seq", 8),  # reordered within the chain
        ("cost_usd", Decimal(0)),  # derived value changed
        ("priced", False),
        ("pricing_version", "2026-06-01"),
        ("payload", PAYLOAD.replace(b"e1", b"e2")),  # payload edited
    ],
)
def test_every_field_is_bound(field: str, other: object) -> None:
    assert _enc(**{field: other}) != _enc()


def test_length_prefixes_prevent_shifting_bytes_between_fields() -> None:
    a = _enc(pricing_version="v1", payload=b"x{}")
    b = _enc(pricing_version="v1x", payload=b"{}")
    assert a != b


@pytest.mark.parametrize(
    "cost,text",
    [
        (Decimal(0), "0.000000000"),
        (Decimal("-0"), "0.000000000"),
        (Decimal("0E-9"), "0.000000000"),
        (Decimal("1.5"), "1.500000000"),
        (Decimal("1.5000000000000"), "1.500000000"),  # trailing zeros beyond 9 are exact
        (Decimal("1E+2"), "100.000000000"),
        (Decimal("0.000000001"), "0.000000001"),
        (Decimal("-12.345"), "-12.345000000"),
        (Decimal("999999999.999999999"), "999999999.999999999"),
    ],
)
def test_cost_format(cost: Decimal, text: str) -> None:
    assert lf.format_cost(cost) == text


@pytest.mark.parametrize("cost", ["0.0000000001", "1e9", "-1e9", "NaN", "Infinity", "sNaN", "1e40"])
def test_cost_that_is_not_exactly_decimal_18_9_is_refused(cost: str) -> None:
    with pytest.raises(lf.LeafError):
        lf.format_cost(Decimal(cost))


def test_decode_round_trips() -> None:
    leaf = _enc()
    d = lf.decode_leaf(leaf)
    assert d == lf.Leaf("acme", 3, 7, "0.001250000", True, "2026-05-01", PAYLOAD)


def _raw(*fields: bytes) -> bytes:
    return b"".join(len(x).to_bytes(4, "big") + x for x in fields)


GOOD = [
    b"agentaudit.leaf.v1",
    b"acme",
    (3).to_bytes(4, "big"),
    (7).to_bytes(8, "big"),
    b"0.001250000",
    b"\x01",
    b"v",
    b"{}",
]


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        _raw(b"agentaudit.leaf.v2", *GOOD[1:]),
        _raw(*GOOD[:-1]),  # a field missing
        _raw(*GOOD, b"extra"),
        _raw(*GOOD)[:-1],  # truncated
        _raw(*GOOD) + b"\x00\x00",  # a dangling partial prefix
        _raw(*GOOD[:4], b"0.00125", *GOOD[5:]),  # non-canonical cost
        _raw(*GOOD[:4], b"+0.001250000", *GOOD[5:]),
        _raw(*GOOD[:4], b"1,5", *GOOD[5:]),
        _raw(*GOOD[:5], b"\x02", *GOOD[6:]),  # priced not 0/1
        _raw(*GOOD[:2], b"\x00\x03", *GOOD[3:]),  # partition not 4 bytes
        _raw(*GOOD[:3], (0).to_bytes(8, "big"), *GOOD[4:]),  # chain_seq 0
        _raw(GOOD[0], b"\xff", *GOOD[2:]),  # tenant not UTF-8
    ],
)
def test_decode_is_strict(bad: bytes) -> None:
    with pytest.raises(lf.LeafError):
        lf.decode_leaf(bad)


def test_encode_rejects_out_of_range() -> None:
    with pytest.raises(lf.LeafError):
        _enc(chain_seq=0)
    with pytest.raises(lf.LeafError):
        _enc(partition=-1)


def test_encode_cost_per_row_is_small() -> None:
    """Encoding + leaf hash per row stays a few µs (CPU time; generous 10x bound)."""
    n = 20_000
    t0 = time.process_time()
    for i in range(n):
        leaf_hash(lf.encode_leaf("acme", 3, i + 1, Decimal("0.001250000"), True, "v", PAYLOAD))
    per_row_us = (time.process_time() - t0) / n * 1e6
    assert per_row_us < 50, per_row_us


@pytest.mark.parametrize("seq", [1, 2, 255, 1 << 40, (1 << 64) - 1])
@pytest.mark.parametrize("version", ["", "2026-11-01", "vé"])
def test_chain_leaves_hash_is_the_leaf_hash_of_encode_leaf(seq: int, version: str) -> None:
    chain = lf.ChainLeaves("acme-1", 7)
    for cost, priced, payload in (
        (Decimal("0.001250000"), True, PAYLOAD),
        (Decimal(0), False, b""),
    ):
        expected = leaf_hash(lf.encode_leaf("acme-1", 7, seq, cost, priced, version, payload))
        assert chain.hash(seq, cost, priced, version, payload) == expected
        assert chain.hash(seq, cost, priced, version, payload) == expected  # cached version


def test_chain_leaves_refuse_what_encode_leaf_refuses() -> None:
    with pytest.raises(lf.LeafError):
        lf.ChainLeaves("acme", 1 << 32)
    chain = lf.ChainLeaves("acme", 0)
    for seq in (0, 1 << 64):
        with pytest.raises(lf.LeafError):
            chain.hash(seq, Decimal(0), True, "", b"{}")
    with pytest.raises(lf.LeafError):
        chain.hash(1, Decimal("0.0000000001"), True, "", b"{}")
