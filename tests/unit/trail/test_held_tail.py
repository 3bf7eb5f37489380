"""A checkpoint stating a tail held unreadable (`agentaudit.sink.tail_accept`): the sink signs
it after those rows were stored, at the size before them; its time must not make them extra.
"""

from __future__ import annotations

from agentaudit.sink.tail_accept import held_line
from agentaudit.sink.trees import Tail
from agentaudit.trail import verdicts as vd
from agentaudit.trail.checkpoint import Checkpoint, sign_checkpoint
from tests.unit.trail.chains import BASE, KEY, ORIGIN, Run, make_rows, note, summary, tree_of
from tests.unit.trail.chains import verdicts as lines


def _stated(rows: list[vd.Row], size: int, head: int, t: int, *, held: bool) -> str:
    tail = Tail(tree_of(rows, size), head, tree_of(rows, head).root())
    ext = (f"time {t}", *((held_line(tail, "Kafka holds epoch 1's log"),) if held else ()))
    cp = Checkpoint(ORIGIN, size, tree_of(rows, size).root(), ext)
    return sign_checkpoint(cp, [KEY.renamed(ORIGIN)])


def test_rows_held_unreadable_stay_pending_after_the_checkpoint_stating_them() -> None:
    rows = make_rows(6)  # row i stored at BASE + i
    held = Run(rows, [note(rows, 4, t=BASE + 4), _stated(rows, 4, 6, BASE + 20, held=True)])
    rep = held.report()
    assert lines(rep)[-1] == ("5-6", vd.PENDING, "2 rows")
    assert rep.ok and summary(rep) == (2, 2, 4, 4, 2)
    # The same re-statement without the line (a forged verdict's prefix): rows 5-6 are extra.
    cut = Run(rows, [note(rows, 4, t=BASE + 4), _stated(rows, 4, 6, BASE + 20, held=False)])
    assert not cut.report().ok
