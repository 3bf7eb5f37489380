"""The chain verifier (agentaudit.trail.audit): one test per verdict, edge sizes, resumption.

Chains are built here from first principles (agentaudit_schemas.canonical.chain_hash, leaf v1, our
CompactTree whose roots are checked against pymerkle in test_merkle) and signed with a key
made for the test; every mutation is applied to the rows or notes the way a store owner or a
forger could, and the verdict lines are compared whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

import pytest

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

    def report(self, keys: PublicKeys = KEYS, **kw: object) -> vd.ChainReport:
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
        return audit.run(self.rows)

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


# ---- clean chains and edge sizes -------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 4, 8, 9, 16, 17])
def test_clean_chain_every_edge_size_is_valid(n: int) -> None:
    rows = make_rows(n)
    sizes = sorted({0, 1, n // 2, n})
    rep = Run(rows, [note(rows, s) for s in sizes]).report()
    assert rep.ok
    assert all(v == vd.VALID for _, v, _ in verdicts(rep))
    assert summary(rep) == (len(sizes), len(sizes), n, n, 0)


def test_line_format_names_size_time_key_and_sources() -> None:
    rows = make_rows(3)
    rep = Run(rows, [note(rows, 3)]).report()
    first, second = (line.render() for line in rep.lines)
    when = datetime.fromtimestamp(BASE + 3, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert first == (
        f"Checkpoint {ORIGIN} size 3 time {when} key {KEYS.current.fingerprint} "
        f"(created 2031-05-06T00:00:00.000000Z, current) [anchor+store]\tvalid"
    )
    assert second == f"Rows {ORIGIN} 1-3\tvalid"


def test_resigned_unchanged_checkpoints_are_each_valid() -> None:
    rows = make_rows(4)
    notes = [note(rows, 4, t=BASE + 10 + k) for k in range(3)]
    rep = Run(rows, notes).report()
    assert summary(rep) == (3, 3, 4, 4, 0)


def test_rows_after_the_last_checkpoint_newer_than_it_are_pending() -> None:
    rows = make_rows(6)
    rep = Run(rows, [note(rows, 4, t=BASE + 4)]).report()
    assert verdicts(rep)[-1] == ("5-6", vd.PENDING, "2 rows")
    assert rep.ok and summary(rep) == (1, 1, 4, 4, 2)


def test_rotated_key_old_checkpoints_still_verify_and_show_retirement() -> None:
    new = Signer("agentaudit", bytes(range(1, 33)))
    keys = KEYS.rotated(new.public_key, datetime.fromtimestamp(BASE + 3, UTC))
    rows = make_rows(4)
    rep = Run(rows, [note(rows, 2), note(rows, 4, signer=new)]).report(keys)
    assert rep.ok
    assert "retired 2031-05-06T00:16:43.000000Z" in rep.lines[0].text
    assert "current" in rep.lines[2].text


def test_a_key_signing_outside_its_time_of_use_is_a_signature_failure() -> None:
    new = Signer("agentaudit", bytes(range(1, 33)))
    rotation = BASE + 3
    keys = KEYS.rotated(new.public_key, datetime.fromtimestamp(rotation, UTC))
    rows = make_rows(6)
    # The retired key signs after the rotation (a leaked key), the new one before it existed.
    notes = [note(rows, 5, signer=KEY), note(rows, 1, signer=new), note(rows, 6, signer=new)]
    rep = Run(rows, notes).report(keys)
    bad = [d for _, v, d in verdicts(rep) if v == vd.SIGNATURE]
    assert len(bad) == 2 and all("outside the key's use" in d for d in bad)


# ---- checkpoint verdicts -------------------------------------------------------------------


def test_signature_invalid_when_the_note_is_edited_or_signed_by_another_key() -> None:
    rows = make_rows(4)
    edited = note(rows, 4).replace("\n4\n", "\n3\n", 1)
    stranger = note(rows, 2, signer=Signer("x", bytes(32)))
    rep = Run(rows, [edited, stranger, note(rows, 4)]).report()
    sig = [d for _, v, d in verdicts(rep) if v == vd.SIGNATURE]
    assert len(sig) == 2 and "invalid signature" in sig[0] + sig[1]
    assert not rep.ok and summary(rep)[:2] == (1, 3)


def test_another_chains_checkpoint_is_a_signature_failure() -> None:
    rows = make_rows(2)
    other = note(rows, 2, origin="audit.example/agentaudit/other/p3")
    rep = Run(rows, [other, note(rows, 2)]).report()
    assert [v for _, v, _ in verdicts(rep)].count(vd.SIGNATURE) == 1


def test_same_size_other_root_is_inconsistent() -> None:
    rows = make_rows(4)
    fork = note(rows, 4, t=BASE + 20, root=bytes(32))
    rep = Run(rows, [note(rows, 4), fork]).report()
    assert ("size 4", vd.INCONSISTENT, "size 4 was also signed with another root") in verdicts(rep)
    assert ("1-4", vd.VALID, "") in verdicts(rep)  # the rows reproduce the other one


def test_smaller_size_signed_later_is_inconsistent() -> None:
    rows = make_rows(6)
    rep = Run(rows, [note(rows, 6, t=BASE + 10), note(rows, 4, t=BASE + 11)]).report()
    assert ("size 4", vd.INCONSISTENT, "size 4 signed after size 6") in verdicts(rep)


def test_root_rows_cannot_reproduce_while_a_later_one_they_do_is_a_forked_head() -> None:
    rows = make_rows(6)
    rep = Run(rows, [note(rows, 3, root=b"\x01" * 32), note(rows, 6)]).report()
    v = verdicts(rep)
    assert v[0][:2] == ("size 3", vd.INCONSISTENT)
    assert ("1-3", vd.VALID, "") in v and ("4-6", vd.VALID, "") in v
    assert summary(rep) == (1, 2, 6, 6, 0)


def test_checkpoint_in_one_source_only_is_not_found() -> None:
    rows = make_rows(4)
    run = Run(rows, [note(rows, 2), note(rows, 4)], [frozenset({"store"}), frozenset({"anchor"})])
    v = verdicts(run.report())
    assert ("size 2", vd.NOT_FOUND, "not in anchor") in v
    assert ("size 4", vd.NOT_FOUND, "not in store") in v


def test_a_note_signed_as_the_verifier_started_may_be_in_one_source_only() -> None:
    rows = make_rows(4)
    run = Run(rows, [note(rows, 4, t=BASE + 50)], [frozenset({"anchor"})], started_at=BASE + 50.5)
    assert run.report().ok


# ---- row verdicts --------------------------------------------------------------------------


def test_payload_edited_in_place_is_a_row_hash_failure_at_that_row() -> None:
    rows = make_rows(8)
    r = rows[4]
    rows[4] = (r[0], r[1].replace(b"5", b"7"), *r[2:])
    rep = Run(rows, [note(rows, 4), note(rows, 8)]).report()
    assert ("5-8", vd.ROW_HASH, "seq 5") in verdicts(rep)
    assert summary(rep) == (2, 2, 7, 8, 0)


def test_payload_edited_with_every_hash_recomputed_fails_the_range_root() -> None:
    rows = make_rows(8)
    r = rows[5]
    rows[5] = (r[0], r[1].replace(b"6", b"9"), *r[2:])
    relink(rows, 5)
    rep = Run(rows, [note(rows[:0] + make_rows(8), 4), note(make_rows(8), 8)]).report()
    v = verdicts(rep)
    assert ("1-4", vd.VALID, "") in v
    assert ("5-8", vd.ROW_HASH, "the rows do not reproduce the checkpoint's root") in v
    assert summary(rep) == (2, 2, 4, 8, 0)


def test_changed_cost_with_stale_leaf_hash_is_a_row_hash_failure() -> None:
    rows = make_rows(4)
    r = rows[0]
    rows[0] = (r[0], r[1], Decimal(0), *r[3:])
    rep = Run(rows, [note(make_rows(4), 4)]).report()
    assert ("1-4", vd.ROW_HASH, "seq 1") in verdicts(rep)


def test_broken_link_blames_the_row_after_the_rewritten_one() -> None:
    fixed = make_rows(6)
    rows = list(fixed)
    r = rows[2]
    rows[2] = (r[0], r[1].replace(b"3", b"4"), *r[2:])
    relink(rows, 2)  # row 3's leaf and row hash recomputed ...
    rows = rows[:3] + fixed[3:]  # ... but row 4 still links to the old row 3
    rep = Run(rows, [note(fixed, 6)]).report()
    assert verdicts(rep)[1:] == [("1-6", vd.ROW_HASH, "seq 4")]


def test_middle_row_deleted_is_missing_and_later_ranges_unverifiable_without_frontier() -> None:
    full = make_rows(9)
    rows = full[:4] + full[5:]
    rep = Run(rows, [note(full, 3), note(full, 6), note(full, 9)]).report()
    v = verdicts(rep)
    assert ("1-3", vd.VALID, "") in v
    assert ("4-6", vd.MISSING, "seq 5") in v
    assert (
        "7-9",
        vd.MISSING,
        "cannot be checked against its checkpoint: earlier rows are missing",
    ) in v
    assert summary(rep) == (3, 3, 3, 9, 0)


def test_a_verified_frontier_lets_later_ranges_be_checked_after_a_gap() -> None:
    full = make_rows(9)
    run = Run(full[:4] + full[5:], [note(full, 3), note(full, 6), note(full, 9)], frontiers=True)
    run.rows_orig = full
    v = verdicts(run.report())
    assert ("4-6", vd.MISSING, "seq 5") in v and ("7-9", vd.VALID, "") in v


def test_a_frontier_that_does_not_reproduce_its_root_is_not_used() -> None:
    full = make_rows(9)
    run = Run(full[:4] + full[5:], [note(full, 3), note(full, 6), note(full, 9)], frontiers=True)
    run.rows_orig = make_rows(9, tenant="other")  # wrong frontiers
    assert ("7-9", vd.VALID, "") not in verdicts(run.report())


def test_tail_deleted_or_store_rolled_back_is_missing_rows() -> None:
    full = make_rows(10)
    rep = Run(full[:7], [note(full, 5), note(full, 10)]).report()
    v = verdicts(rep)
    assert ("1-5", vd.VALID, "") in v and ("6-10", vd.MISSING, "seq 8-10") in v
    assert summary(rep) == (2, 2, 5, 10, 0)  # rows 6-7 are there but no root proves them


def test_duplicate_chain_seq_is_an_extra_row_and_the_linking_one_is_kept() -> None:
    rows = make_rows(5)
    forged = (3, b'{"n":99}', *rows[2][2:])
    for dup in ([*rows[:2], forged, *rows[2:]], [*rows[:3], forged, *rows[3:]]):
        rep = Run(dup, [note(rows, 5)]).report()
        assert verdicts(rep) == [("size 5", vd.VALID, ""), ("1-5", vd.EXTRA, "seq 3")], dup
        assert summary(rep) == (1, 1, 5, 6, 0)


def test_forged_row_appended_before_the_last_checkpoint_was_signed_is_extra() -> None:
    rows = make_rows(5)
    nxt = make_rows(6)[5]
    forged = (*nxt[:8], float(BASE + 2), True, "")  # backdated ingested_at
    rep = Run([*rows, forged], [note(rows, 5, t=BASE + 30)]).report()
    assert ("6-6", vd.EXTRA, "seq 6") in verdicts(rep)
    assert not rep.ok and summary(rep) == (1, 1, 5, 6, 0)


def test_rows_after_a_newest_handoff_checkpoint_are_extra_even_if_ingested_later() -> None:
    # A sink signs `handoff` after its last insert, and one taking the chain over signs before
    # it stores: a row after a newest handoff was written by no sink, whatever its ingested_at.
    rows = make_rows(5)
    later = (*rows[4][:8], BASE + 10_000.0, *rows[4][9:])
    rep = Run([*rows[:4], later], [note(rows, 4, handoff=True)]).report()
    assert ("5-5", vd.EXTRA, "seq 5") in verdicts(rep) and not rep.ok
    taken_over = Run([*rows[:4], later], [note(rows, 4, handoff=True), note(rows, 4, t=BASE + 20)])
    assert verdicts(taken_over.report())[-1] == ("5-5", vd.PENDING, "1 rows")


def test_a_handoff_signed_in_the_same_second_as_the_tick_before_it_still_seals() -> None:
    # The sink's last tick and its handoff share size and second: the order they were
    # signed in (the order the sources list them) decides which is the newest.
    rows = make_rows(5)
    later = (*rows[4][:8], BASE + 10_000.0, *rows[4][9:])
    notes = [note(rows, 4, t=BASE + 9), note(rows, 4, t=BASE + 9, handoff=True)]
    assert ("5-5", vd.EXTRA, "seq 5") in verdicts(Run([*rows[:4], later], notes).report())
    takeover = [*notes, note(rows, 4, t=BASE + 9)]  # a sink took it over, same second
    assert verdicts(Run([*rows[:4], later], takeover).report())[-1][1] == vd.PENDING


def test_rows_after_an_end_checkpoint_are_extra() -> None:
    rows = make_rows(6)
    later = tuple((*r[:8], BASE + 10_000.0, *r[9:]) for r in rows[4:])
    rep = Run([*rows[:4], *later], [note(rows, 4, end=True)]).report()
    assert ("5-6", vd.EXTRA, "seq 5, 6") in verdicts(rep)
    assert "end" in rep.lines[0].text


def test_growth_after_an_end_is_inconsistent() -> None:
    rows = make_rows(6)
    rep = Run(rows, [note(rows, 4, end=True), note(rows, 6, t=BASE + 100)]).report()
    assert ("size 6", vd.INCONSISTENT, "size 6 signed after the chain's end at size 4") in verdicts(
        rep
    )


def _swap(rows: list[vd.Row], i: int, j: int) -> list[vd.Row]:
    out = list(rows)
    ri, rj = out[i], out[j]
    out[i], out[j] = (ri[0], *rj[1:]), (rj[0], *ri[1:])
    return sorted(out, key=lambda r: r[0])


@pytest.mark.parametrize(("i", "j"), [(4, 5), (1, 14), (0, 15)])
def test_rows_swapped_are_reordered_not_row_hash(i: int, j: int) -> None:
    rows = make_rows(16)
    rep = Run(_swap(rows, i, j), [note(rows, 16)]).report()
    assert verdicts(rep)[1:] == [("1-16", vd.REORDERED, f"seq {i + 1}, {j + 1}")]
    assert summary(rep) == (1, 1, 14, 16, 0)


def test_reordered_without_stored_leaf_hashes_uses_the_chain_links() -> None:
    rows = [(*r[:7], "", *r[8:]) for r in make_rows(8)]  # rows stored before migration 0013
    swapped = _swap(rows, 2, 3)
    rep = Run(swapped, [note(make_rows(8), 8)]).report()
    assert ("1-8", vd.REORDERED, "seq 3, 4") in verdicts(rep)


def test_derived_value_disagreement_is_reported_per_column() -> None:
    rows = make_rows(4)
    rows[1] = (*rows[1][:10], "user_id")
    rows[2] = (*rows[2][:10], "cost_usd")
    rep = Run(rows, [note(rows, 4)]).report()
    v = verdicts(rep)
    assert ("1-4", f"{vd.DERIVED}: cost_usd", "seq 3") in v
    assert ("1-4", f"{vd.DERIVED}: user_id", "seq 2") in v
    assert not rep.ok and summary(rep)[2:4] == (2, 4)


# ---- scope and partial histories ---------------------------------------------------------


def test_rows_outside_the_range_feed_the_tree_from_their_stored_leaf_only() -> None:
    rows = make_rows(8)
    # An unchecked row with a bad payload: not reported, its stored leaf is trusted for the tree.
    r = rows[1]
    rows[1] = (r[0], b"garbage", *r[2:9], False, "")
    rows = [(*r[:9], False, "") if r[0] <= 4 else r for r in rows]
    rep = Run(rows, [note(rows, 4), note(rows, 8)]).report()
    assert verdicts(rep)[-1] == ("5-8", vd.VALID, "")
    assert summary(rep)[2:] == (4, 4, 0)


def test_a_later_part_verifies_from_a_start_size_and_frontier() -> None:
    full = make_rows(12)
    part = full[5:]
    start = tree_of(full, 5)
    run = Run(part, [note(full, 3), note(full, 5), note(full, 12)])
    rep = run.report(start_size=5, start_frontier=start.state()[1], start_prev_hash=full[4][6])
    assert rep.ok and summary(rep) == (3, 3, 7, 7, 0)
    bad = run.report(start_size=5, start_frontier=tree_of(make_rows(5, "x"), 5).state()[1])
    assert not bad.ok


# ---- store mode's shapes: runs of engine-checked rows, derived values found late --------------


def engine_checked(rows: list[vd.Row]) -> list[vd.Row | vd.Run]:
    """Rows as store mode sends a block its engine checked: the first as a row without payload
    or cost, the others as one run."""
    head = (rows[0][0], None, None, *rows[0][3:])
    rest = rows[1:]
    if not rest:
        return [head]
    leaves = [bytes.fromhex(r[7]) for r in rest]
    return [head, vd.Run(rest[0][0], leaves, [r[8] for r in rest], rest[-1][6])]


def rendered(rep: vd.ChainReport) -> tuple[list[str], tuple[int, ...]]:
    return [line.render() for line in rep.lines], summary(rep)


@pytest.mark.parametrize(
    ("n", "sizes"), [(1, [1]), (2, [1, 2]), (9, [4, 8]), (17, [1, 2, 3, 16]), (17, [5]), (8, [])]
)
@pytest.mark.parametrize("tail", ["pending", "extra", "handoff", "end"])
def test_runs_of_engine_checked_rows_report_exactly_what_their_rows_do(
    n: int, sizes: list[int], tail: str
) -> None:
    rows = make_rows(n)
    notes = [note(rows, s) for s in sizes]
    if sizes and tail != "pending":
        last = sizes[-1]
        notes[-1] = note(
            rows,
            last,
            t=BASE + n + 100 if tail == "extra" else None,
            handoff=tail == "handoff",
            end=tail == "end",
        )
    expected = rendered(Run(rows, notes).report())
    assert rendered(Run(engine_checked(rows), notes).report()) == expected  # type: ignore[arg-type]
    # Split where a tampered row comes whole between two blocks, as the store sends it.
    if n >= 5:
        bad = rows[2]
        tampered = (bad[0], b'{"n":-1}', *bad[2:])
        mixed = [*rows[:2], tampered, *rows[3:]]
        expected = rendered(Run(mixed, notes).report())
        split = [*engine_checked(rows[:2]), tampered, *engine_checked(rows[3:])]
        assert rendered(Run(split, notes).report()) == expected  # type: ignore[arg-type]
        assert vd.ROW_HASH in " ".join(expected[0]) or not sizes


def test_a_run_must_follow_the_row_before_it() -> None:
    rows = make_rows(6)
    blocks = engine_checked(rows)
    with pytest.raises(ValueError, match="does not follow"):
        Run([blocks[1]], [note(rows, 6)]).report()  # type: ignore[list-item]


def test_derived_values_found_after_the_rows_are_read_are_reported_like_a_rows_own() -> None:
    rows = make_rows(6)
    own = list(rows)
    own[1] = (*own[1][:10], "user_id")
    own[4] = (*own[4][:10], "cost_usd,priced")
    expected = rendered(Run(own, [note(rows, 4)]).report())
    found = {2: "user_id", 5: "cost_usd,priced", 7: "user_id"}  # seq 7: stored after the read
    audit = a.ChainAudit(ORIGIN, TENANT, PART, KEYS, [vd.Found(note(rows, 4), BOTH)], sources=BOTH)
    assert rendered(audit.run(engine_checked(rows), derived=lambda: found)) == expected
    assert f"{vd.DERIVED}: user_id" in " ".join(expected[0])
