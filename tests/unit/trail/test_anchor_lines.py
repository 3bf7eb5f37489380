"""Anchor day files edited by hand (someone with write access to the anchor directory): every
line reaches the verifier as text, and a line that is not a note is a failing verdict, never a
crash of `agentaudit verify` or of the sink's rebuild."""

from __future__ import annotations

from pathlib import Path

import orjson

from agentaudit.anchors import DirectoryAnchor
from agentaudit.sink.trees import anchored
from agentaudit.trail import audit as a
from agentaudit.trail import verdicts as vd
from tests.unit.trail.chains import BOTH, KEY, KEYS, ORIGIN, PART, TENANT, make_rows, note

# JSON that parses but whose "note" is no text, JSON that is no object, and torn JSON.
ODD = [{"note": 5}, {"note": None}, {"note": ["x"]}, {"note": {"a": 1}}, [1, 2], "text", 7]


def _anchor(tmp_path: Path, good: str) -> DirectoryAnchor:
    day = tmp_path / TENANT / f"p{PART}" / "2031-05-06.jsonl"
    day.parent.mkdir(parents=True)
    lines = [orjson.dumps({"note": good}), *(orjson.dumps(o) for o in ODD), b'{"note": "tor']
    day.write_bytes(b"\n".join(lines) + b"\n")
    return DirectoryAnchor(tmp_path)


def test_odd_anchor_lines_are_failing_verdicts_not_a_crash(tmp_path: Path) -> None:
    rows = make_rows(4)
    good = note(rows, 4)
    notes = _anchor(tmp_path, good).notes(TENANT, PART)
    assert notes[0] == good and len(notes) == 1 + len(ODD) + 1
    assert all(isinstance(n, str) for n in notes)
    found = [vd.Found(good, frozenset({"store"}))]
    found += [vd.Found(n, frozenset({"anchor"})) for n in notes]
    rep = a.ChainAudit(ORIGIN, TENANT, PART, KEYS, found, sources=BOTH).run(rows)
    assert not rep.ok
    bad = [line for line in rep.lines if line.verdict == vd.SIGNATURE]
    assert len(bad) == len(ODD) + 1
    assert sum(line.verdict == vd.VALID for line in rep.lines) == 2  # the note and its rows


def test_the_sinks_rebuild_skips_an_odd_newest_anchor_line(tmp_path: Path) -> None:
    rows = make_rows(4)
    anchor = _anchor(tmp_path, note(rows, 4))
    deployment = ORIGIN.split("/agentaudit/")[0]
    cp = anchored(anchor, lambda o: [KEY.renamed(o).verifier()], deployment, (TENANT, PART))
    assert cp is not None and cp.size == 4


def test_directories_no_sink_writes_name_no_chain(tmp_path: Path) -> None:
    # Before: ("BAD_Tenant", 0) made `agentaudit verify` raise CheckpointError (no origin).
    for name in ("BAD_Tenant/p0", "acme/p03", "acme/px", "acme/p3", "-x/p1", "ok/p"):
        (tmp_path / name).mkdir(parents=True)
    assert DirectoryAnchor(tmp_path).chains() == [("acme", 3)]
