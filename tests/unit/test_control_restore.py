"""`restore-blocks`' decision (`control_restore.lacking`), without a broker or a store: which
stored newest blocks the control topic lost. Order is the store's reading of the log, never
the issuers' clocks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from agentaudit.control_plane import manual_control
from agentaudit.control_restore import Position, lacking
from agentaudit_schemas.records import ControlAction, ControlMessage, Scope

T = datetime(2026, 3, 1, 12, tzinfo=UTC)
SCOPE = Scope(tenant_id="acme", agent_id="bot")


def msg(action: ControlAction, seconds: int, by: str = "oncall") -> ControlMessage:
    return manual_control(SCOPE, action, issued_by=by, now=T + timedelta(seconds=seconds))


def at(offset: int) -> Position:
    return (T, offset)


def test_an_unblock_stamped_before_the_block_it_lifted_keeps_the_scope_lifted() -> None:
    """A jobs host 5 s ahead stamps its BLOCK 12:00:05; the operator lifts it at once, the
    UNBLOCK stamped 12:00:02 and written after it. The agents obey the UNBLOCK (the topic's
    latest). Before, restore-blocks compared `issued_at`, took the topic's UNBLOCK for an
    older record and published the BLOCK again: a lifted scope re-blocked, topic intact."""
    block = msg(ControlAction.BLOCK, 5, by="stream_jobs")
    unblock = msg(ControlAction.UNBLOCK, 2)
    # what the store holds: the block read first (offset 0), the unblock after (offset 1);
    # restore only asks about a block that is the newest it read, so here it is as if the
    # unblock had not been stored yet (sink behind) or was stored after
    assert lacking([(block, at(0))], {SCOPE.key: unblock}, {unblock.control_id: at(1)}) == []
    assert lacking([(block, at(0))], {SCOPE.key: unblock}, {}) == []  # not stored yet: newer


def test_a_topic_that_lost_the_block_gets_it_back() -> None:
    block = msg(ControlAction.BLOCK, 5)
    older = msg(ControlAction.UNBLOCK, 9)  # stamped later, but read before the block
    assert lacking([(block, at(3))], {}, {}) == [block]  # the topic is empty
    # a replay re-published an older message after the loss: the store read it before
    assert lacking([(block, at(3))], {SCOPE.key: older}, {older.control_id: at(1)}) == [block]
    assert lacking([(block, at(3))], {SCOPE.key: block}, {block.control_id: at(3)}) == []
