"""The verdict lines of a chain's report, from what `agentaudit.trail.audit` found.

Pure and shippable like the rest of the trail package: one line per checkpoint and per row
range, in the manner of ``aws cloudtrail validate-logs`` (rules: `verdicts`).
"""

from __future__ import annotations

from .verdicts import (
    DERIVED,
    EXPIRED,
    EXTRA,
    INCONSISTENT,
    MISSING,
    NOT_FOUND,
    PENDING,
    REORDERED,
    ROW_HASH,
    SIGNATURE,
    VALID,
    ChainReport,
    Held,
    Line,
    Segment,
    iso,
    seqs,
)


def checkpoint_line(rep: ChainReport, c: Held, origin: str) -> None:
    """The checkpoint's line: its signature, consistency and sources."""
    where = "+".join(sorted(c.sources))
    if c.cp is None or c.time is None:
        line = Line("checkpoint", f"Checkpoint {origin} [{where}]", SIGNATURE, c.error)
    else:
        key = c.key.describe() if c.key else "key ?"
        end = " end" if c.end else ""
        text = f"Checkpoint {origin} size {c.cp.size} time {iso(c.time)}{end} {key} [{where}]"
        if c.inconsistent:
            line = Line("checkpoint", text, INCONSISTENT, c.inconsistent)
        elif c.missing_from:
            line = Line("checkpoint", text, NOT_FOUND, f"not in {', '.join(c.missing_from)}")
        else:
            line = Line("checkpoint", text, VALID)
    rep.lines.append(line)
    rep.checkpoints += 1
    rep.checkpoints_valid += line.verdict == VALID


def problems(seg: Segment, text: str) -> list[Line]:
    """The lines of what is wrong in a row range (none when nothing is)."""
    out: list[Line] = []
    if seg.missing:
        spans = [
            f"{a}-{b}" if a != b else str(a)
            for a, b in zip(seg.missing[::2], seg.missing[1::2], strict=True)
        ]
        out.append(Line("rows", text, MISSING, "seq " + ", ".join(spans)))
    for verdict in (ROW_HASH, REORDERED, EXTRA):
        if verdict in seg.issues:
            out.append(Line("rows", text, verdict, seqs(seg.issues[verdict])))
    for cols, at in sorted(seg.derived.items()):
        out.append(Line("rows", text, f"{DERIVED}: {cols}", seqs(at)))
    return out


def segment_lines(rep: ChainReport, seg: Segment, origin: str, why: str = "") -> None:
    """The lines of the rows up to a checkpoint, and their counts (``why``: the retention that
    explains rows expired by policy)."""
    assert seg.hi is not None
    missing = sum(b - a + 1 for a, b in zip(seg.missing[::2], seg.missing[1::2], strict=True))
    if not seg.seen and not missing and not seg.issues and not seg.derived and not seg.expired:
        return
    text = f"Rows {origin} {seg.lo}-{seg.hi}"
    lines = problems(seg, text)
    if seg.expired:  # rows gone by policy are neither rows read nor missing
        a, b = seg.expired
        rep.expired += b - a + 1
        lines.insert(0, Line("rows", text, EXPIRED, f"seq {a}-{b}; {why}"))
    bad = len(seg.bad)
    if not seg.root_ok and (seg.missing or seg.unverifiable):
        bad = seg.seen  # no root proves the rows that are there
    if not seg.root_ok and seg.seen:
        if seg.unverifiable and not seg.missing:
            detail = "cannot be checked against its checkpoint: earlier rows are missing"
            lines.insert(0, Line("rows", text, MISSING, detail))
            bad = seg.seen
        elif not any(ln.verdict in (ROW_HASH, MISSING, EXTRA, REORDERED) for ln in lines):
            # e.g. a cost changed with its leaf hash recomputed: the derived-value line
            # names the column, this one says the signed root does not hold either.
            detail = "the rows do not reproduce the checkpoint's root"
            lines.append(Line("rows", text, ROW_HASH, detail))
            bad = seg.seen
    rep.lines.extend(lines or [Line("rows", text, VALID)])
    rep.rows += seg.seen + missing + seg.dups
    rep.rows_valid += seg.seen - min(bad, seg.seen)


def tail_lines(rep: ChainReport, seg: Segment, origin: str, pos: int) -> None:
    """Rows after the last checkpoint: problems, else pending (not counted as rows)."""
    if not seg.seen and not seg.issues:
        return
    text = f"Rows {origin} {seg.lo}-{pos}"
    rep.lines.extend(problems(seg, text))
    bad = len(seg.bad)
    pending = seg.seen - bad
    if pending > 0:
        rep.lines.append(Line("rows", text, PENDING, f"{pending} rows"))
    rep.rows += bad + seg.dups
    rep.pending += pending
