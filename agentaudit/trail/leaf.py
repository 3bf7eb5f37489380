"""The bytes one trail row commits to in its chain's Merkle tree (leaf format v1).

A leaf binds everything an auditor relies on about a row:

* **where it sits**: tenant, Kafka partition (together: the chain) and ``chain_seq``. The
  tree already orders leaves, but binding the place into the leaf itself means a row moved
  to another chain (another tenant's, or another partition's) or to another position
  cannot verify there even if an attacker recomputes that chain's tree: the verifier sees
  a leaf that names a different chain or sequence number;
* **what it says**: the canonical payload bytes (``schemas/canonical.py``), from which
  ClickHouse derives every typed column, so a changed typed column is caught by comparing
  it with the payload;
* **what the pipeline derived** and stored beside the payload: ``cost_usd`` as a fixed
  decimal string, ``priced`` and ``pricing_version`` — so a changed cost is caught, and a
  verifier holding the pricing table can recompute the cost and report a disagreement.

Not bound, on purpose: Kafka offset, log epoch and topic. They locate the source record for
exactly-once recovery, but Kafka keeps nothing for auditors and a replay into a new topic
log (new epoch, new offsets) must not change what the trail asserts about an event.

Encoding v1 (everything an independent verifier needs to rebuild it)::

    leaf  = field(b"agentaudit.leaf.v1")
          || field(tenant_id as UTF-8)
          || field(uint32_be(kafka_partition))
          || field(uint64_be(chain_seq))              # 1-based, gap-free per chain
          || field(cost_usd as ASCII, see below)
          || field(0x01 if priced else 0x00)
          || field(pricing_version as UTF-8)
          || field(payload)                           # canonical JSON bytes, verbatim
    field(b) = uint32_be(len(b)) || b

``cost_usd`` is written like ClickHouse's ``Decimal(18, 9)``: optional ``-``, the integer
part without leading zeros (``0`` if zero), ``.``, exactly nine fraction digits; zero is
``0.000000000`` (never ``-0.000000000``); at most 9 integer digits. A cost that does not fit
exactly is refused, never rounded: rounding would make the leaf assert a value nobody stored.

Every field is length-prefixed, so no choice of tenant, version or payload can make two
different rows encode to the same bytes; the leading version field lets a later format
coexist (a verifier dispatches on it). The leaf hash is ``SHA-256(0x00 || leaf)``
(:func:`agentaudit.trail.merkle.leaf_hash`).
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

LEAF_VERSION = b"agentaudit.leaf.v1"
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_NANO = Decimal("1e-9")
_MAX_COST = Decimal("1e9")  # Decimal(18, 9): nine integer digits
# The priced field with its length prefix.
_PRICED = {True: b"\x00\x00\x00\x01\x01", False: b"\x00\x00\x00\x01\x00"}
# len=4 || partition || len=8 || chain_seq || len(cost): the fixed run after the tenant.
_PLACE = struct.Struct(">IIIQI")
_VERSION_FIELD = _U32.pack(len(LEAF_VERSION)) + LEAF_VERSION


class LeafError(ValueError):
    """A value cannot be encoded, or bytes are not a well-formed v1 leaf."""


@dataclass(frozen=True, slots=True)
class Leaf:
    """The committed values of one row (decoded form of a v1 leaf)."""

    tenant_id: str
    partition: int
    chain_seq: int
    cost_usd: str
    """The fixed decimal string, exactly as encoded (see :func:`format_cost`)."""
    priced: bool
    pricing_version: str
    payload: bytes


def format_cost(cost: Decimal) -> str:
    """``cost`` as the fixed nine-decimal string of leaf v1; :class:`LeafError` if inexact."""
    # Fast path (~0.3 µs instead of ~1.5): the sink's costs are already Decimal(18, 9)
    # values whose str() is the canonical form: no exponent, nine fraction digits.
    s = str(cost)
    dot = s.find(".")
    if 0 < dot <= 9 + (s[0] == "-") and len(s) - dot == 10 and "E" not in s:
        return "0.000000000" if s == "-0.000000000" else s
    try:
        q = cost.quantize(_NANO)
    except InvalidOperation as e:  # NaN, infinity, or too many digits
        raise LeafError(f"cost {cost!r} is not a Decimal(18, 9) value") from e
    if q != cost or not -_MAX_COST < q < _MAX_COST:
        raise LeafError(f"cost {cost!r} is not exactly a Decimal(18, 9) value")
    if q.is_zero():
        return "0.000000000"  # also for -0: one value, one encoding
    return format(q, "f")


def encode_leaf(
    tenant_id: str,
    partition: int,
    chain_seq: int,
    cost_usd: Decimal,
    priced: bool,
    pricing_version: str,
    payload: bytes,
) -> bytes:
    """The v1 leaf bytes of one row (see the module docstring for the exact layout)."""
    if not 0 <= partition < 1 << 32:
        raise LeafError(f"partition {partition} outside uint32")
    if not 1 <= chain_seq < 1 << 64:
        raise LeafError(f"chain_seq {chain_seq} outside 1..2^64-1")
    cost = format_cost(cost_usd).encode("ascii")
    tenant = tenant_id.encode("utf-8")
    version = pricing_version.encode("utf-8")
    # One pack per run of fixed-size fields: this runs once per row on the sink's hot path.
    return b"".join(
        (
            _VERSION_FIELD,
            _U32.pack(len(tenant)),
            tenant,
            _PLACE.pack(4, partition, 8, chain_seq, len(cost)),
            cost,
            _PRICED[bool(priced)],
            _U32.pack(len(version)),
            version,
            _U32.pack(len(payload)),
            payload,
        )
    )


class ChainLeaves:
    """Leaf hashes of one chain's rows, ``SHA-256(0x00 || encode_leaf(...))``, made faster.

    Every leaf of a chain starts with the same bytes (prefix, version, tenant; the partition
    follows): they are hashed once and the hash state copied per row, pricing versions are
    encoded once. The sink and the verifier compute one leaf per row: 3.9 instead of 5.0 µs.
    """

    __slots__ = ("_base", "_partition", "_versions")

    def __init__(self, tenant_id: str, partition: int) -> None:
        if not 0 <= partition < 1 << 32:
            raise LeafError(f"partition {partition} outside uint32")
        tenant = tenant_id.encode("utf-8")
        self._base = hashlib.sha256(b"\x00" + _VERSION_FIELD + _U32.pack(len(tenant)) + tenant)
        self._partition = partition
        self._versions: dict[str, bytes] = {}

    def hash(
        self, chain_seq: int, cost_usd: Decimal, priced: bool, pricing_version: str, payload: bytes
    ) -> bytes:
        """The leaf hash of the chain's row ``chain_seq`` (same rules as :func:`encode_leaf`)."""
        if not 1 <= chain_seq < 1 << 64:
            raise LeafError(f"chain_seq {chain_seq} outside 1..2^64-1")
        cost = format_cost(cost_usd).encode("ascii")
        version = self._versions.get(pricing_version)
        if version is None:
            raw = pricing_version.encode("utf-8")
            version = _U32.pack(len(raw)) + raw
            if len(self._versions) < 64:  # a handful of pricing versions in practice
                self._versions[pricing_version] = version
        h = self._base.copy()
        h.update(
            b"".join(
                (
                    _PLACE.pack(4, self._partition, 8, chain_seq, len(cost)),
                    cost,
                    _PRICED[bool(priced)],
                    version,
                    _U32.pack(len(payload)),
                    payload,
                )
            )
        )
        return h.digest()


def _fields(data: bytes) -> list[bytes]:
    out: list[bytes] = []
    pos, end = 0, len(data)
    while pos < end:
        if end - pos < 4:
            raise LeafError("truncated length prefix")
        (n,) = _U32.unpack_from(data, pos)
        pos += 4
        if n > end - pos:
            raise LeafError("field runs past the end of the leaf")
        out.append(data[pos : pos + n])
        pos += n
    return out


def decode_leaf(data: bytes) -> Leaf:
    """Parse v1 leaf bytes strictly: re-encoding the result gives ``data`` back exactly."""
    f = _fields(data)
    if not f or f[0] != LEAF_VERSION:
        raise LeafError("not an agentaudit.leaf.v1 leaf")
    if len(f) != 8:
        raise LeafError(f"a v1 leaf has 8 fields, not {len(f)}")
    _, tenant, part, seq, cost, priced, version, payload = f
    if len(part) != 4 or len(seq) != 8 or priced not in (b"\x00", b"\x01"):
        raise LeafError("malformed partition, chain_seq or priced field")
    try:
        leaf = Leaf(
            tenant_id=tenant.decode("utf-8"),
            partition=_U32.unpack(part)[0],
            chain_seq=_U64.unpack(seq)[0],
            cost_usd=cost.decode("ascii"),
            priced=priced == b"\x01",
            pricing_version=version.decode("utf-8"),
            payload=payload,
        )
        canonical = encode_leaf(
            leaf.tenant_id,
            leaf.partition,
            leaf.chain_seq,
            Decimal(leaf.cost_usd),
            leaf.priced,
            leaf.pricing_version,
            leaf.payload,
        )
    except (UnicodeDecodeError, InvalidOperation) as e:
        raise LeafError(f"malformed text field: {e}") from e
    # Catches non-canonical costs ("1.5", "+1.000000000", "01.0…") and out-of-range values.
    if canonical != data:
        raise LeafError("leaf is not in canonical v1 form")
    return leaf
