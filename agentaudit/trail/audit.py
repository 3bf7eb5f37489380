"""Verify one chain's rows against its signed checkpoints (``agentaudit verify``'s core).

Pure and shippable: the standard library, ``cryptography`` and this package only, so the very
same code runs in ``agentaudit verify`` and in an auditor's export bundle (``verify.py``).

Input. A chain (tenant, partition) with its origin; the deployment's public keys
(:class:`~.pubkeys.PublicKeys`); every signed checkpoint note found for the chain, each tagged
with where it was found (``store`` table, ``anchor`` directory, ``export`` bundle) and
optionally the tree frontier stored with it; then the rows, streamed in ``chain_seq`` order
(:data:`Row` tuples). Memory is O(log n) for a clean chain (one :class:`~.merkle.CompactTree`)
plus O(problems found).

Verdicts and their exact meaning: :mod:`.verdicts`.
"""

from __future__ import annotations

import hashlib
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence

from .leaf import ChainLeaves, LeafError
from .lines import checkpoint_line, segment_lines, tail_lines
from .merkle import CompactTree
from .note import Verifier
from .pubkeys import PublicKeys
from .reorder import leaf_hex, reordered_verdicts, row_hash_ok
from .verdicts import (
    EXTRA,
    GENESIS,
    ChainReport,
    Expiry,
    Found,
    Held,
    Row,
    Run,
    Segment,
    expiry_horizon,
    open_held,
)

_sha256 = hashlib.sha256


class ChainAudit:
    """Verify one chain: build with its checkpoints, then :meth:`run` over its rows."""

    def __init__(
        self,
        origin: str,
        tenant_id: str,
        partition: int,
        keys: PublicKeys,
        found: Iterable[Found],
        *,
        sources: frozenset[str] = frozenset(),
        started_at: float | None = None,
        start_size: int = 0,
        start_frontier: Sequence[bytes] = (),
        start_prev_hash: str | None = None,
        expiry: Sequence[Expiry] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``sources``: the sources that were read (``not found`` needs two); ``started_at``:
        unix time the reading began (later notes may be in one source only); ``start_*``: the
        tree and chain link before the first row given (an export of a later part);
        ``expiry``: retention sweeps' claims about this chain (``expired by policy``);
        ``clock``: unix time now (rows stored while the chain is read, see
        :meth:`_stored_during_run`)."""
        self.expiry = tuple(expiry)
        self._clock = clock
        self.origin, self.tenant, self.partition = origin, tenant_id, partition
        self.sources, self.started_at = sources, started_at
        self.start_size, self.start_frontier = start_size, tuple(start_frontier)
        self.start_prev = GENESIS if start_size == 0 else start_prev_hash
        merged: dict[str, Held] = {}
        self._order: dict[str, int] = {}
        """Each note's last place in `found`: sources list notes in signing order (the anchor
        last), which breaks ties between notes signed in the same second."""
        for i, f in enumerate(found):
            self._order[f.note] = i
            c = merged.get(f.note)
            if c is None:
                merged[f.note] = Held(f.note, f.sources, f.frontier)
            else:
                c.sources |= f.sources
                c.frontier = c.frontier or f.frontier
        self.cps = list(merged.values())
        verifiers = keys.verifiers(origin)
        for c in self.cps:
            self._open(c, keys, verifiers)
        self._time_rules()

    def _open(self, c: Held, keys: PublicKeys, verifiers: list[Verifier]) -> None:
        open_held(c, keys, verifiers, self.origin)
        if c.cp is None or c.time is None:
            return
        late = self.started_at is not None and c.time + 1 > self.started_at
        if len(self.sources) > 1 and not late:
            c.missing_from = tuple(sorted(self.sources - c.sources))

    def _time_rules(self) -> None:
        """Sizes never shrink with time and nothing grows after an end (rows not needed)."""
        good = sorted((c for c in self.cps if c.cp), key=lambda c: (c.time, c.cp.size))  # type: ignore[union-attr]
        top, end_at = -1, None
        for c in good:
            assert c.cp is not None
            if end_at is not None and c.cp.size > end_at:
                c.inconsistent = f"size {c.cp.size} signed after the chain's end at size {end_at}"
            elif c.cp.size < top:
                c.inconsistent = f"size {c.cp.size} signed after size {top}"
            top = max(top, c.cp.size)
            if c.end and end_at is None:
                end_at = c.cp.size

    # ---- the row pass -------------------------------------------------------------------

    def run(
        self,
        rows: Iterable[Row | Run],
        progress: Callable[[int], None] | None = None,
        derived: Callable[[], Mapping[int, str]] | None = None,
        siblings: tuple[int, bool] | None = None,
    ) -> ChainReport:
        """Stream ``rows`` (``chain_seq`` order; rows or runs of them) through the tree; the
        report. ``derived``, called once the rows are read: chain_seq -> columns whose stored
        value disagrees with the payload, for checked rows (as a row's own ``derived`` field;
        store mode finds them in a query that runs while the rows are read). ``siblings``: for
        a chain none of whose checkpoints verifies (:attr:`signed` false), the newest sink
        checkpoint of another chain of its partition (its ``time``, whether it is a
        ``handoff``): the sink signs every chain of a partition it owns at each tick, so the
        chain's rows are judged against that one as against a checkpoint of its own."""
        live = [c for c in self.cps if c.cp is not None and not c.inconsistent]
        self._at: dict[int, list[Held]] = {}
        for c in live:
            assert c.cp is not None
            if c.cp.size >= self.start_size:
                self._at.setdefault(c.cp.size, []).append(c)
        sizes = self._sizes = sorted(self._at)
        self._segs = [
            Segment(self.start_size + 1 if i == 0 else sizes[i - 1] + 1, s)
            for i, s in enumerate(sizes)
        ]
        self._segs.append(Segment((sizes[-1] if sizes else self.start_size) + 1, None))
        # Rows after the last checkpoint that existed when it was signed, or after an end.
        self._end = min((c.cp.size for c in live if c.end), default=None)  # type: ignore[union-attr]
        # A checkpoint stating a held tail re-states the size before those rows: not after them.
        self._last_time = max((c.time or 0 for c in live if not c.holds), default=None)
        # The newest checkpoint is a handoff: every row a sink stored is in it, and a sink
        # that takes the chain over signs before it stores: a row after it is no sink's.
        newest = max(live, key=lambda c: (c.time or 0, self._order[c.note]), default=None)
        self._sealed = newest is not None and newest.handoff
        if not live and siblings is not None:
            # A forged chain (another tenant's, another partition) has no checkpoint: its rows
            # were pending forever. Rows its partition's sink signed around are extra rows.
            self._last_time, self._sealed = siblings
        self._si = 0
        self._next = sizes[0] if sizes else -1
        self._tree: CompactTree | None = CompactTree(self.start_size, self.start_frontier)
        self._resumed: CompactTree | None = None
        self._pending: list[bytes] = []
        """Leaf hashes appended since the trees were last brought up to `_pos`."""
        self._pos = self._gone_to = self.start_size  # _gone_to: the absent prefix so far
        self._expired_to, self._why = expiry_horizon(
            self.expiry,
            self._at,
            self.start_size,
            lambda h: self._resume_from(self._at[h]) is not None,
        )
        self._anomalies: dict[int, Row] = {}
        self._breaks: dict[int, str] = {}  # seq -> row_hash the link expected (of seq - 1)
        self._link_only: set[int] = set()
        self._link_rows: dict[int, Row] = {}
        self._reach()
        self._walk(rows, progress)
        for seq, names in sorted((derived() if derived is not None else {}).items()):
            if seq <= self._pos:  # (a row stored after its chain was read is not judged)
                self._derived(seq, names)
        self._finish_tail()
        self._classify_reordered()
        return self._report()

    @property
    def signed(self) -> bool:
        """Whether any of the chain's checkpoints verifies (signature, time and size rules)."""
        return any(c.cp is not None and not c.inconsistent for c in self.cps)

    def _seg(self) -> Segment:
        return self._segs[self._si]

    def _segment_of(self, seq: int) -> Segment:
        return self._segs[bisect_left(self._sizes, seq)]

    def _reach(self) -> None:
        """At each checkpoint size equal to the position: check its roots, move to the next
        range, and decide which tree continues (the continuous one, or one resumed from this
        checkpoint's frontier once the continuous tree failed)."""
        self._flush()
        while self._si < len(self._sizes) and self._sizes[self._si] == self._pos:
            size = self._pos
            cps = self._at[size]
            tree, resumed = self._tree, self._resumed
            root = tree.root() if tree is not None else None
            rroot = resumed.root() if resumed is not None else None
            seg = self._seg()
            for c in cps:
                assert c.cp is not None
                c.rows_root = None if root is None else root == c.cp.root_hash
                c.resumed_root = None if rroot is None else rroot == c.cp.root_hash
            seg.root_ok = any(c.rows_root or c.resumed_root for c in cps)
            seg.unverifiable = root is None and rroot is None
            if any(c.rows_root for c in cps):
                self._resumed = None
            else:
                self._resumed = self._resume_from(cps) or (resumed if seg.root_ok else None)
            self._si += 1
        self._next = self._sizes[self._si] if self._si < len(self._sizes) else -1

    def _flush(self) -> None:
        """Bring the trees up to `_pos` with the pending leaf hashes."""
        if self._pending:
            for tree in (self._tree, self._resumed):
                if tree is not None:
                    tree.extend(self._pending)
            self._pending.clear()

    def _resume_from(self, cps: list[Held]) -> CompactTree | None:
        for c in cps:
            if c.frontier is None or c.cp is None:
                continue
            try:
                t = CompactTree(c.cp.size, c.frontier)
            except ValueError:
                continue
            if t.root() == c.cp.root_hash:
                return t
        return None

    def _skip_to(self, seq: int) -> None:
        """Rows ``pos+1 .. seq-1`` are missing: record them range by range; no tree survives."""
        self._tree = self._resumed = None
        while self._pos < seq - 1:
            seg = self._seg()
            hi = seq - 1 if seg.hi is None else min(seg.hi, seq - 1)
            self._gone(seg, self._pos + 1, hi)
            self._pos = hi
            self._reach()

    def _walk(self, rows: Iterable[Row | Run], progress: Callable[[int], None] | None) -> None:
        # The hot loop (~1M rows in a few seconds): locals only; the pending row `held` is
        # appended to the tree when the next seq shows it has no duplicate.
        tenant, part = self.tenant, self.partition
        sha, leaf = _sha256, ChainLeaves(tenant, part).hash
        anomalies, breaks, link_only = self._anomalies, self._breaks, self._link_only
        held: Row | None = None
        held_lh, held_ok = b"", True
        prev = self.start_prev  # row_hash of the last appended row (None: unknown)
        n = 0
        for r in rows:
            if isinstance(r, Run):
                if held is not None:
                    self._append(held, held_lh)
                    held = None
                if progress is not None and (n + len(r.leaves)) >> 16 != n >> 16:
                    progress(n + len(r.leaves))
                n += len(r.leaves)
                self._append_run(r)
                prev = r.row_hash
                continue
            n += 1
            if progress is not None and not n & 0xFFFF:
                progress(n)
            seq = r[0]
            if held is not None:
                if seq == held[0]:
                    held, held_lh, held_ok = self._duplicate(held, held_lh, held_ok, r, prev)
                    continue
                prev = self._append(held, held_lh)
                held = None
            if seq <= self._pos:  # below a chain_seq already appended: out of order input
                if r[9]:
                    self._segment_of(seq).duplicate(seq)
                continue
            if seq > self._pos + 1:
                self._skip_to(seq)
                prev = None
            stored, body = r[7], r[1]
            if r[9] and body is None:  # checked by the store's engine (see `Row`)
                held_lh = bytes.fromhex(stored)
                linked = prev is None or r[5] == prev
                if not linked:
                    breaks[seq] = prev  # type: ignore[assignment]
                    link_only.add(seq)
                    self._link_rows[seq] = r
                held_ok = linked
            elif r[9] and body is not None:
                # A row whose leaf is recomputed here always comes with its cost (`Row`).
                try:
                    held_lh = leaf(seq, r[2], r[3], r[4], body)  # type: ignore[arg-type]
                    ok = not stored or stored == held_lh.hex()
                except LeafError:
                    held_lh, ok = _sha256(b"").digest(), False
                ok = ok and sha(r[5].encode("ascii") + body).hexdigest() == r[6]
                linked = prev is None or r[5] == prev
                if not linked:
                    breaks[seq] = prev  # type: ignore[assignment]
                    if ok:
                        link_only.add(seq)
                        self._link_rows[seq] = r
                if not ok:
                    anomalies[seq] = r
                held_ok = ok and linked
            else:
                held_lh = (
                    bytes.fromhex(stored) if stored else leaf(seq, r[2], r[3], r[4], body or b"")  # type: ignore[arg-type]
                )
                held_ok = True
            held = r
        if held is not None:
            self._append(held, held_lh)
        if progress is not None:
            progress(n)

    def _duplicate(
        self, held: Row, held_lh: bytes, held_ok: bool, r: Row, prev: str | None
    ) -> tuple[Row, bytes, bool]:
        """Two rows with one chain_seq: keep the one that checks (the first if both or
        neither do); the other is an extra row."""
        seq = r[0]
        lh = bytes.fromhex(self._leaf_hex(r, seq) or "00" * 32)
        ok = (not r[7] or r[7] == lh.hex()) and row_hash_ok(r)
        ok = ok and (prev is None or r[5] == prev)
        seg = self._segment_of(seq)
        if ok and not held_ok:
            self._anomalies.pop(seq, None)
            self._breaks.pop(seq, None)
            self._link_only.discard(seq)
            if held[9]:
                seg.duplicate(seq)
            return r, lh, True
        if r[9]:
            seg.duplicate(seq)
        return held, held_lh, held_ok

    def _append(self, r: Row, lh: bytes) -> str:
        seg = self._segs[self._si]
        if r[9]:
            seg.seen += 1
            if r[10]:
                self._derived(r[0], r[10])
            if seg.hi is None and (
                self._end is not None
                or (self._sealed and not self._stored_during_run(r[8]))
                or (self._last_time is not None and r[8] < self._last_time)
            ):
                seg.flag(EXTRA, r[0])
        self._pending.append(lh)  # into the trees in blocks (`_flush`): twice as fast
        self._pos = r[0]
        if self._pos == self._next:
            self._reach()
        return r[6]

    def _append_run(self, run: Run) -> None:
        """`_append` for each row of ``run``, a block at a time (a block ends at a checkpoint)."""
        if run.first != self._pos + 1:
            raise ValueError(f"a run from seq {run.first} does not follow seq {self._pos}")
        leaves, ingested, n, i = run.leaves, run.ingested, len(run.leaves), 0
        while i < n:
            seg = self._segs[self._si]
            stop = n if self._next < 0 else min(n, i + self._next - self._pos)
            seg.seen += stop - i
            if seg.hi is None:
                ended, sealed = self._end is not None, self._sealed
                last_time = self._last_time
                for k in range(i, stop):
                    t = ingested[k]
                    if (
                        ended
                        or (sealed and not self._stored_during_run(t))
                        or (last_time is not None and t < last_time)
                    ):
                        seg.flag(EXTRA, run.first + k)
            self._pending.extend(leaves[i:stop])
            self._pos += stop - i
            i = stop
            if self._pos == self._next:
                self._reach()

    def _stored_during_run(self, ingested: float) -> bool:
        """Whether a row was stored while this run read the chain (between its start and now,
        a second of slack each side): a sink taking a handed-off chain over signs a checkpoint
        before it stores, but one signed after the checkpoints were read is not among them, so
        such a row after a newest ``handoff`` is pending, not extra (a false alarm during any
        rebalance before). A row dated before the run or after now stays extra."""
        if self.started_at is None:
            return False
        return self.started_at - 1 <= ingested <= self._clock() + 1

    def _derived(self, seq: int, names: str) -> None:
        seg = self._segment_of(seq)
        seg.derived.setdefault(names, []).append(seq)
        seg.bad.add(seq)

    def _finish_tail(self) -> None:
        """Checkpoints larger than the rows: the missing tail."""
        while self._si < len(self._sizes):
            seg = self._seg()
            assert seg.hi is not None
            if self._pos < seg.hi:
                self._gone(seg, self._pos + 1, seg.hi)
            self._tree = self._resumed = None
            self._pos = seg.hi
            self._reach()

    def _gone(self, seg: Segment, a: int, b: int) -> None:
        """Rows a..b are absent: expired as far as they extend the absent prefix to the horizon."""
        if a == self._gone_to + 1 and a <= self._expired_to:
            self._gone_to = e = min(b, self._expired_to)
            seg.expired += (a, e)
            a = e + 1
        if a <= b:
            seg.missing += (a, b)

    def _classify_reordered(self) -> None:
        """Judge the disturbed rows (a check failed, or the link to the previous row broke):
        :func:`~.reorder.reordered_verdicts`."""
        disturbed = {**{s: self._link_rows[s] for s in self._link_only}, **self._anomalies}
        verdicts = reordered_verdicts(
            disturbed, self._anomalies, self._breaks, self._link_only, self._leaf_hex
        )
        for seq, verdict in verdicts:
            self._segment_of(seq).flag(verdict, seq)

    def _leaf_hex(self, r: Row, seq: int) -> str:
        return leaf_hex(self.tenant, self.partition, r, seq)

    # ---- verdicts -----------------------------------------------------------------------

    def _report(self) -> ChainReport:
        rep = ChainReport(self.origin)
        self._same_size_rules()
        # A forked head: a root the rows cannot reproduce while a later one they do; the
        # rows before a reproduced root are covered by it.
        later_ok = False
        for seg in reversed(self._segs[:-1]):
            assert seg.hi is not None
            cps = self._at[seg.hi]
            if later_ok:
                for c in cps:
                    if c.rows_root is False and not c.inconsistent:
                        c.inconsistent = "the rows reproduce a later checkpoint but not this root"
                seg.root_ok = seg.root_ok or not seg.missing
            later_ok = later_ok or any(c.rows_root for c in cps)
        by_size: dict[int, list[Held]] = {}
        for c in self.cps:
            by_size.setdefault(c.cp.size if c.cp else -1, []).append(c)
        seg_at = {s.hi: s for s in self._segs if s.hi is not None}
        for size in sorted(set(by_size) | set(seg_at)):
            for c in sorted(by_size.get(size, ()), key=lambda c: (c.time or 0, c.note)):
                checkpoint_line(rep, c, self.origin)
            if size in seg_at:
                segment_lines(rep, seg_at[size], self.origin, self._why)
        tail_lines(rep, self._segs[-1], self.origin, self._pos)
        return rep

    def _same_size_rules(self) -> None:
        for size in self._sizes:
            cps = [c for c in self._at[size] if not c.inconsistent]
            if len({c.cp.root_hash for c in cps}) < 2:  # type: ignore[union-attr]
                continue
            good = [c for c in cps if c.rows_root or c.resumed_root]
            ref = good[0] if good else min(cps, key=lambda c: c.time or 0)
            for c in cps:
                if c.cp.root_hash != ref.cp.root_hash:  # type: ignore[union-attr]
                    c.inconsistent = f"size {size} was also signed with another root"
