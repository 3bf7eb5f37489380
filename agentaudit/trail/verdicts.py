"""Verdicts of the chain verifier (:mod:`.audit`): names, lines, per-chain reports, summary.

Pure and shippable like the rest of the package.

Verdicts, one line per checkpoint and per row range between consecutive checkpoint sizes, in
the manner of ``aws cloudtrail validate-logs`` (tab before the verdict):

Checkpoint lines
  ``valid``; ``INVALID: signature`` (malformed, unknown key, bad signature, other chain's
  origin); ``INVALID: inconsistent with previous checkpoint`` (another checkpoint of the same
  size has a different root that the rows reproduce, or neither reproduces and it was signed
  later; a smaller size signed after a larger one; a larger size signed after an ``end``; a
  root the rows cannot reproduce while a LATER checkpoint's root they do reproduce: a forked
  head); ``not found`` (found in one source but not the other, when both were read; a note
  signed within a second of the verifier starting is exempt: the signer anchors, then stores).

Row range lines (``Rows <origin> <first>-<last>``)
  ``valid`` (the rows reproduce the range's checkpoint root and every row checks); ``INVALID: row
  hash`` (a row's recomputed leaf differs from its stored ``leaf_hash``, its ``row_hash`` is not
  SHA-256(prev_hash ‖ payload), its ``prev_hash`` is not the previous row's ``row_hash``, or the
  range's root differs from the checkpoint's with no row to blame); ``missing rows`` (a gap in
  ``chain_seq``, or fewer rows than a checkpoint's size); ``extra rows`` (a duplicate ``chain_seq``;
  a row after the last checkpoint whose ``ingested_at`` is before that checkpoint's latest ``time``;
  any row after an ``end``, or after the newest checkpoint when that one is a ``handoff``, unless
  stored while the verifier ran); ``reordered`` (following ``prev_hash`` links puts the row at
  another position, and its stored leaf hash, if any, is its leaf there; or its stored leaf hash is
  its leaf at another position near a disturbance); ``derived value disagrees: <columns>`` (supplied
  by the caller: store mode re-derives typed columns and cost); ``pending (not yet checkpointed)``
  (rows after the last checkpoint ingested after it: not invalid; a chain with no checkpoint that
  verifies is judged against its partition's newest sink checkpoint, of another chain, when the
  caller supplies it);
  ``expired by policy`` (not invalid: the chain's first rows, ``chain_seq`` 1 to a horizon H,
  are gone and an :class:`Expiry` in the trail explains it: a ``retention_applied`` event of
  the tenant that a signed checkpoint of its chain covers names H for the chain, H is the size
  of a valid checkpoint whose ``time`` is at least the policy's days before the event, H is
  below the first row of every held subject, and a frontier stored with that checkpoint
  reproduces its signed root, so the rows after H are still checked. Rows gone beyond H, or
  with no such event, stay ``missing rows``).

A range with several kinds of problem gets one line per kind. A row counts once; rows a range's
root failure leaves unexplained all count invalid. Once a range fails, later ranges are checked
from the failing checkpoint's stored frontier when it reproduces that checkpoint's signed root
(a frontier is never trusted otherwise); without one they cannot be checked after a gap and are
reported as ``missing rows``. Summary: ``N/M checkpoints valid, K/L rows valid`` (L counts rows
read in scope plus missing positions, pending rows apart).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import NamedTuple

from .checkpoint import Checkpoint, CheckpointError, open_checkpoint
from .note import NoteError, Verifier
from .pubkeys import PublicKey, PublicKeys

VALID = "valid"
SIGNATURE = "INVALID: signature"
INCONSISTENT = "INVALID: inconsistent with previous checkpoint"
NOT_FOUND = "not found"
ROW_HASH = "INVALID: row hash"
MISSING = "missing rows"
EXTRA = "extra rows"
REORDERED = "reordered"
DERIVED = "derived value disagrees"
PENDING = "pending (not yet checkpointed)"
EXPIRED = "expired by policy"
#: Verdicts that make ``agentaudit verify`` exit 1.
FAILING = frozenset(
    {SIGNATURE, INCONSISTENT, NOT_FOUND, ROW_HASH, MISSING, EXTRA, REORDERED, DERIVED}
)

Row = tuple[int, bytes | None, Decimal | None, bool, str, str, str, str, float, bool, str]
"""One stored row: (chain_seq, payload, cost_usd, priced, pricing_version, prev_hash, row_hash,
leaf_hash (hex; '' if not stored), ingested_at (unix s), checked (in the reported range: leaf
recomputed and verdicts given; else the stored leaf hash only feeds the tree), derived (columns
whose stored value disagrees with the payload, comma-separated; '' if none or not checked)).
A checked row's payload is None when the store's engine already recomputed its leaf and row
hash from its bytes, found both equal to the stored ones and the row linked to the one before
(store mode, `agentaudit.verify.store`): its stored leaf hash feeds the tree, whose roots the
signed checkpoints still check. ``cost_usd`` is None whenever the verifier does not recompute
the row's leaf (payload None, or an unchecked row with a stored leaf hash): store mode does not
send it then."""


class Run(NamedTuple):
    """Consecutive rows the store's engine checked, in one piece (store mode): each recomputed
    to its stored leaf and row hash there, linked to the row before it, with no other row at
    its ``chain_seq``. It follows a :data:`Row` the engine checked the same way (the run's
    first link is to that row), so only what the tree and the tail rules need is sent."""

    first: int
    """chain_seq of the first row; the others follow one by one."""
    leaves: list[bytes]
    """Each row's stored leaf hash (raw)."""
    ingested: Sequence[float]
    """Each row's ingested_at (unix s): rows after the last checkpoint are judged by it."""
    row_hash: str
    """The last row's row_hash (the next row links to it)."""

    @property
    def last(self) -> int:
        return self.first + len(self.leaves) - 1


class Expiry(NamedTuple):
    """A retention sweep's claim about one chain, from a ``retention_applied`` event in the
    trail: rows ``chain_seq <= horizon`` may be gone (`ChainAudit` checks the claim)."""

    horizon: int
    days: int
    """The retention in force: the horizon's checkpoint must be at least this old."""
    at: float
    """When the sweep was recorded (the event's occurred_at, unix s)."""
    floor: int | None = None
    """The first row of a held subject in the chain: the horizon must stay below it."""


DAY = 86_400
GENESIS = "0" * 64
SAMPLES = 8  # seqs named per verdict line
SLACK = timedelta(seconds=1)


@dataclass(frozen=True)
class Found:
    """A checkpoint note as found: its text, where (``store``/``anchor``/``export``), frontier."""

    note: str
    sources: frozenset[str]
    frontier: tuple[bytes, ...] | None = None


@dataclass
class Held:
    """A checkpoint note under verification: what it says and what was found about it."""

    note: str
    sources: frozenset[str]
    frontier: tuple[bytes, ...] | None
    cp: Checkpoint | None = None
    key: PublicKey | None = None
    time: int | None = None
    end: bool = False
    handoff: bool = False
    """Signed by a sink giving the chain up after its last insert: no row may follow it
    until a later checkpoint (a sink taking a chain over signs one before it stores)."""
    holds: bool = False
    """It states a tail held unreadable (`agentaudit.sink.tail_accept`): signed after those
    rows, it does not make them extra."""
    error: str = ""
    inconsistent: str = ""
    missing_from: tuple[str, ...] = ()
    rows_root: bool | None = None  # the continuous tree reproduces the root
    resumed_root: bool | None = None  # the tree resumed from an earlier frontier does


@dataclass(frozen=True)
class Line:
    """One verdict line: ``text`` then a tab and ``verdict`` (with its detail)."""

    kind: str  # "checkpoint" | "rows"
    text: str
    verdict: str
    detail: str = ""

    @property
    def failing(self) -> bool:
        return self.verdict in FAILING or self.verdict.startswith(DERIVED)

    def render(self) -> str:
        return f"{self.text}\t{self.verdict}{f' ({self.detail})' if self.detail else ''}"


@dataclass
class ChainReport:
    """A chain's verdict lines and counts."""

    origin: str
    lines: list[Line] = field(default_factory=list)
    checkpoints: int = 0
    checkpoints_valid: int = 0
    rows: int = 0
    rows_valid: int = 0
    pending: int = 0
    expired: int = 0

    @property
    def ok(self) -> bool:
        return not any(line.failing for line in self.lines)


@dataclass
class Segment:
    lo: int  # first chain_seq of the range
    hi: int | None  # last (= checkpoint size); None: after the last checkpoint
    seen: int = 0  # rows in scope
    missing: list[int] = field(default_factory=list)  # [first, last, first, last, ...]
    expired: list[int] = field(default_factory=list)  # [first, last]: gone by policy
    issues: dict[str, list[int]] = field(default_factory=dict)  # verdict -> seqs
    derived: dict[str, list[int]] = field(default_factory=dict)  # columns -> seqs
    bad: set[int] = field(default_factory=set)
    dups: int = 0
    root_ok: bool = False
    unverifiable: bool = False  # no tree to check the root with (after a gap)

    def duplicate(self, seq: int) -> None:
        """A row beside the one kept at ``seq``: extra, and counted as one more (bad) row."""
        self.issues.setdefault(EXTRA, []).append(seq)
        self.dups += 1

    def flag(self, verdict: str, seq: int) -> None:
        self.issues.setdefault(verdict, []).append(seq)
        self.bad.add(seq)


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def in_use(key: PublicKey, t: int) -> bool:
    """Whether ``key`` was current at unix second ``t`` (``time`` lines are whole seconds,
    truncated: a second of slack each side)."""
    when = datetime.fromtimestamp(t, UTC)
    return key.created_at - SLACK <= when and (
        key.retired_at is None or when < key.retired_at + SLACK
    )


def expiry_horizon(
    claims: Iterable[Expiry],
    at: Mapping[int, Sequence[Held]],
    start: int,
    resumable: Callable[[int], bool],
) -> tuple[int, str]:
    """The largest horizon the claims justify (``start`` if none) and why (see ``EXPIRED``).

    ``at``: the valid checkpoints by size; ``resumable(h)``: a frontier stored with a
    checkpoint of size h reproduces its root (the rows after h can still be checked)."""
    best, why = start, ""
    for e in claims:
        h = e.horizon
        if h <= best or h not in at or e.days < 1 or (e.floor is not None and h >= e.floor):
            continue
        if any(c.time is not None and c.time + e.days * DAY <= e.at for c in at[h]) and resumable(
            h
        ):
            best, why = h, f"retention {e.days} days, applied {iso(e.at)}"
    return best, why


def seqs(seqs: Sequence[int]) -> str:
    s = sorted(set(seqs))
    shown = ", ".join(map(str, s[:SAMPLES]))
    return f"seq {shown}{f', … {len(s)} in all' if len(s) > SAMPLES else ''}"


def summary(reports: Iterable[ChainReport]) -> tuple[str, bool]:
    """``N/M checkpoints valid, K/L rows valid[, P rows pending][, E rows expired by policy]``
    and whether all is valid."""
    reps = list(reports)
    n = sum(r.checkpoints_valid for r in reps)
    m = sum(r.checkpoints for r in reps)
    k = sum(r.rows_valid for r in reps)
    rows = sum(r.rows for r in reps)
    pending = sum(r.pending for r in reps)
    text = f"{n}/{m} checkpoints valid, {k}/{rows} rows valid"
    if pending:
        text += f", {pending} rows pending"
    expired = sum(r.expired for r in reps)
    if expired:
        text += f", {expired} rows {EXPIRED}"
    return text, all(r.ok for r in reps)


def open_held(c: Held, keys: PublicKeys, verifiers: list[Verifier], origin: str) -> None:
    """Open ``c``'s note as a checkpoint of ``origin``: its ``cp``, ``time``, ``end``,
    ``handoff`` and ``key`` are set when one of ``keys`` (``verifiers``: theirs under
    ``origin``) signed it with one ``time`` line while that key was in use, else its ``error``
    (a checkpoint line's ``INVALID: signature``)."""
    try:
        cp, note = open_checkpoint(c.note, verifiers, origin)
    except (NoteError, CheckpointError) as e:
        c.error = str(e)
        return
    times = [x[5:] for x in cp.extensions if x.startswith("time ")]
    if len(times) != 1 or not times[0].isdigit():
        c.error = "no single 'time <unix seconds>' line"
        return
    c.cp, c.time, c.end = cp, int(times[0]), "end" in cp.extensions
    c.handoff = "handoff" in cp.extensions
    c.holds = any(x.startswith("unreadable-tail ") for x in cp.extensions)
    c.key = keys.key_for(origin, note.verified[0].key_id)
    if c.key is not None and not in_use(c.key, c.time):
        # A key signs only while it is current: a retired (perhaps leaked) key's later
        # signature, or one dated before the key existed, is not the log's.
        c.error = f"signed at {iso(c.time)}, outside the key's use ({c.key.describe()})"
        c.cp = None
