"""The chain verifier (agentaudit.trail.audit): clean chains and edge sizes, checkpoint
verdicts, partial histories and store mode's shapes; the row verdicts are in
test_row_verdicts.

Chains come from `tests.unit.trail.chains` (built from first principles, signed with a key
made for the test); every mutation is applied to the rows or notes the way a store owner or a
forger could, and the verdict lines are compared whole.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from agentaudit.trail import audit as a
from agentaudit.trail import verdicts as vd
from agentaudit.trail.note import Signer
from tests.unit.trail.chains import (
    BASE,
    BOTH,
    KEY,
    KEYS,
    ORIGIN,
    PART,
    TENANT,
    Run,
    make_rows,
    note,
    summary,
    tree_of,
    verdicts,
)

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
