"""Signed test chains for the verifier's tests: rows built from first principles
(agentaudit_schemas.canonical.chain_hash, leaf v1, our CompactTree whose roots are checked against
pymerkle in test_merkle), checkpoints signed with a key made for the test, and a `Run` that
verifies them with `agentaudit.trail.audit.ChainAudit`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from agentaudit.trail import audit as a
from agentaudit.trail import verdicts as vd
from agentaudit.trail.checkpoint import Checkpoint, sign_checkpoint
from agentaudit.trail.leaf import encode_leaf
from agentaudit.trail.merkle import CompactTree, leaf_hash
from agentaudit.trail.note import Signer
from agentaudit.trail.pubkeys import PublicKeys
from agentaudit_schemas.canonical import GENESIS_HASH, chain_hash

T0 = datetime(2031, 5, 6, tzinfo=UTC)
BASE = int(T0.timestamp()) + 1000  # rows are ingested at BASE + seq
KEY = Signer("agentaudit", bytes(range(32)))
KEYS = PublicKeys.first(KEY.public_key, T0)
TENANT, PART = "acme", 3
ORIGIN = f"audit.example/agentaudit/{TENANT}/p{PART}"
BOTH = frozenset({"store", "anchor"})


def make_rows(n: int, tenant: str = TENANT, part: int = PART, start: int = 1) -> list[vd.Row]:
    out: list[vd.Row] = []
    prev = GENESIS_HASH
    for i in range(start, n + 1):
        payload = b'{"n":%d,"tenant_id":"%s"}' % (i, tenant.encode())
        cost = Decimal("0.000001500") if i % 2 else Decimal("0.000000000")
        row_hash = chain_hash(prev, payload)
        lh = leaf_hash(encode_leaf(tenant, part, i, cost, True, "2031-01", payload)).hex()
        out.append((i, payload, cost, True, "2031-01", prev, row_hash, lh, BASE + i, True, ""))
        prev = row_hash
    return out


def tree_of(rows: list[vd.Row], size: int) -> CompactTree:
    t = CompactTree()
    for r in rows[:size]:
        t.append_hash(bytes.fromhex(r[7]))
    return t


def note(
    rows: list[vd.Row],
    size: int,
    *,
    t: int | None = None,
    end: bool = False,
    root: bytes | None = None,
    signer: Signer = KEY,
    origin: str = ORIGIN,
    handoff: bool = False,
) -> str:
    ext = (f"time {BASE + size if t is None else t}",) + (("end",) if end else ())
    ext += ("handoff",) if handoff else ()
    cp = Checkpoint(origin, size, root or tree_of(rows, size).root(), ext)
    return sign_checkpoint(cp, [signer.renamed(origin)])


@dataclass
class Run:
    rows: list[vd.Row]
    notes: list[str]
    sources: list[frozenset[str]] = field(default_factory=list)
    frontiers: bool = False
    started_at: float | None = None

    def report(
        self,
        keys: PublicKeys = KEYS,
        siblings: tuple[int, bool] | None = None,
        **kw: object,
    ) -> vd.ChainReport:
        found = []
        for i, n in enumerate(self.notes):
            src = self.sources[i] if i < len(self.sources) else BOTH
            fr = None
            if self.frontiers:
                size = int(n.split("\n")[1])
                fr = tree_of(self.rows_orig, size).state()[1]
            found.append(vd.Found(n, src, fr))
        audit = a.ChainAudit(
            ORIGIN, TENANT, PART, keys, found, sources=BOTH, started_at=self.started_at, **kw
        )  # type: ignore[arg-type]
        return audit.run(self.rows, siblings=siblings)

    def __post_init__(self) -> None:
        self.rows_orig = list(self.rows)


def verdicts(rep: vd.ChainReport) -> list[tuple[str, str, str]]:
    """(range or size, verdict, detail) per line, without the key description."""
    out = []
    for line in rep.lines:
        words = line.text.split()
        where = words[2] if line.kind == "rows" else f"size {words[3]}" if "size" in words else "?"
        out.append((where, line.verdict, line.detail))
    return out


def summary(rep: vd.ChainReport) -> tuple[int, int, int, int, int]:
    return rep.checkpoints_valid, rep.checkpoints, rep.rows_valid, rep.rows, rep.pending


def relink(rows: list[vd.Row], frm: int) -> None:
    """What a forger does after changing row ``frm``'s payload: recompute its leaf and every
    later row's chain link, so leaf_hash and prev/row hashes all check (0-based index)."""
    prev = rows[frm - 1][6] if frm else GENESIS_HASH
    for i in range(frm, len(rows)):
        seq, p, c, pr, v, _, _, _, ing, chk, d = rows[i]
        rh = chain_hash(prev, p)
        lh = leaf_hash(encode_leaf(TENANT, PART, seq, c, pr, v, p)).hex()
        rows[i] = (seq, p, c, pr, v, prev, rh, lh, ing, chk, d)
        prev = rh
