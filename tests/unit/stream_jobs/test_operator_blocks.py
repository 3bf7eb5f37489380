"""`OperatorBlocks`: the jobs' control messages neither lift nor shorten an operator's block.
(The broker case: tests/integration/test_stream_jobs_operator_blocks.py, behind faults.)"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from agentaudit.control_plane import manual_control
from agentaudit_schemas.records import ControlAction, ControlMessage, ControlReason, Scope
from stream_jobs.operator_blocks import OperatorBlocks

NOW = datetime(2026, 11, 21, 12, tzinfo=UTC)
JOBS = "agentaudit.stream_jobs"
ACME = Scope(tenant_id="acme")


def _jobs(
    action: ControlAction, until: datetime | None = None, scope: Scope = ACME
) -> ControlMessage:
    reason = (
        ControlReason.BUDGET_EXHAUSTED
        if action is ControlAction.BLOCK
        else ControlReason.WINDOW_RESET
    )
    return ControlMessage(
        control_id="c" * 32,
        scope=scope,
        action=action,
        reason=reason,
        message="by the jobs",
        issued_at=NOW,
        issued_by=JOBS,
        until=until,
    )


def _wire(msg: ControlMessage) -> tuple[bytes, bytes]:
    return msg.scope.key.encode(), msg.model_dump_json().encode()


def _operator(action: ControlAction, until: datetime | None = None) -> ControlMessage:
    return manual_control(ACME, action, issued_by="oncall", now=NOW, until=until)


def test_an_operator_block_keeps_the_scope_from_the_jobs_unblock_and_shorter_blocks() -> None:
    blocks = OperatorBlocks(JOBS)
    assert blocks.admit(_jobs(ControlAction.UNBLOCK), NOW)  # nothing held yet
    blocks.apply(*_wire(_operator(ControlAction.BLOCK)))
    assert not blocks.admit(_jobs(ControlAction.UNBLOCK), NOW)
    assert not blocks.admit(_jobs(ControlAction.BLOCK, NOW + timedelta(hours=1)), NOW)
    assert not blocks.admit(_jobs(ControlAction.BLOCK), NOW)  # no longer than "never"
    assert blocks.admit(_jobs(ControlAction.UNBLOCK, scope=Scope(tenant_id="globex")), NOW)
    blocks.apply(*_wire(_jobs(ControlAction.UNBLOCK)))  # the jobs' own echo: no decision
    assert not blocks.admit(_jobs(ControlAction.UNBLOCK), NOW)
    blocks.apply(*_wire(_operator(ControlAction.UNBLOCK)))  # the operator lifts it
    assert blocks.admit(_jobs(ControlAction.UNBLOCK), NOW)


def test_an_operator_block_with_an_end_holds_until_then_and_longer_blocks_pass() -> None:
    end = NOW + timedelta(hours=2)
    blocks = OperatorBlocks(JOBS)
    blocks.apply(*_wire(_operator(ControlAction.BLOCK, until=end)))
    assert not blocks.admit(_jobs(ControlAction.BLOCK, NOW + timedelta(hours=1)), NOW)
    assert blocks.admit(_jobs(ControlAction.BLOCK, end + timedelta(hours=1)), NOW)
    assert not blocks.admit(_jobs(ControlAction.UNBLOCK), end - timedelta(seconds=1))
    assert blocks.admit(_jobs(ControlAction.UNBLOCK), end)


def test_heartbeats_and_invalid_records_are_no_operator_decision() -> None:
    blocks = OperatorBlocks(JOBS)
    blocks.apply(*_wire(_operator(ControlAction.BLOCK)))
    blocks.apply(b"tenant=acme", b"{not json")
    blocks.apply(b"heartbeat/stream_jobs", b'{"record": "heartbeat"}')
    blocks.apply(b"heartbeat/stream_jobs", None)
    blocks.apply(b"tenant=globex", None)  # another scope's tombstone
    assert blocks.holds("tenant=acme", NOW)


def test_a_tombstone_ends_the_operator_s_block_and_the_held_budget_block_is_published() -> None:
    """A hand-made tombstone of the scope leaves the SDK with no state: nothing is blocked.
    Before, the jobs kept the operator's block for good and held back every budget BLOCK of
    the scope (it lifts at the window's end, before the operator's "never"): the hard budget
    was exhausted and the SDK never saw a block."""
    blocks = OperatorBlocks(JOBS)
    blocks.apply(*_wire(_operator(ControlAction.BLOCK)))
    exhausted = _jobs(ControlAction.BLOCK, NOW + timedelta(hours=1))
    assert not blocks.admit(exhausted, NOW)  # shorter than the operator's: held back
    blocks.apply(b"tenant=acme", None)
    assert not blocks.holds("tenant=acme", NOW)
    assert blocks.released(NOW) == [exhausted]  # the jobs' decision reaches the topic
    assert blocks.admit(_jobs(ControlAction.BLOCK, NOW + timedelta(hours=2)), NOW)


def test_a_message_admitted_after_the_block_ended_drops_the_older_held_one() -> None:
    blocks = OperatorBlocks(JOBS)
    blocks.apply(*_wire(_operator(ControlAction.BLOCK)))
    assert not blocks.admit(_jobs(ControlAction.BLOCK, NOW + timedelta(hours=1)), NOW)
    blocks.apply(b"tenant=acme", None)
    assert blocks.admit(_jobs(ControlAction.UNBLOCK), NOW)  # newer: published at once
    assert blocks.released(NOW) == []  # the older BLOCK must not follow it


def test_an_operator_block_with_fields_this_version_does_not_know_holds() -> None:
    """A newer CLI's block (one more field, at the top and in the scope): the SDK applies it
    with them dropped (`decode_control`), so the agents are blocked; the jobs parsed it
    strictly, skipped it, and their UNBLOCK of the scope (a window reset) lifted it."""
    doc = json.loads(_operator(ControlAction.BLOCK).model_dump_json())
    doc["ticket"] = "INC-1"
    doc["scope"]["region"] = "eu"
    blocks = OperatorBlocks(JOBS)
    blocks.apply(b"tenant=acme", json.dumps(doc).encode())
    assert blocks.holds("tenant=acme", NOW)
    assert not blocks.admit(_jobs(ControlAction.UNBLOCK), NOW)


def test_what_was_held_back_is_published_when_the_operator_s_block_ends_by_itself() -> None:
    """A breaker's BLOCK (until unblocked) replaced an operator's block ending at `end`; the
    breaker's half-open UNBLOCK came before `end` and was held back. Without publishing it
    at `end`, the breaker's BLOCK stayed the scope's state: blocked for good, no probes."""
    end = NOW + timedelta(hours=2)
    blocks = OperatorBlocks(JOBS)
    blocks.apply(*_wire(_operator(ControlAction.BLOCK, until=end)))
    assert blocks.admit(_jobs(ControlAction.BLOCK), NOW)
    half_open = _jobs(ControlAction.UNBLOCK)
    assert not blocks.admit(half_open, end - timedelta(minutes=1))
    assert blocks.released(end - timedelta(seconds=1)) == []
    assert blocks.released(end) == [half_open]
    assert blocks.released(end) == []


def test_an_operator_s_unblock_drops_what_was_held_back() -> None:
    blocks = OperatorBlocks(JOBS)
    blocks.apply(*_wire(_operator(ControlAction.BLOCK, until=NOW + timedelta(hours=1))))
    assert not blocks.admit(_jobs(ControlAction.UNBLOCK), NOW)
    blocks.apply(*_wire(_operator(ControlAction.UNBLOCK)))
    assert blocks.released(NOW + timedelta(hours=2)) == []


def test_an_indefinite_operator_block_survives_compaction_and_a_restart_of_the_jobs() -> None:
    """A breaker opens on a scope an operator blocked until further notice. Its BLOCK was
    published over the operator's: compaction keeps one record per key, so the operator's
    was removed; a restarted worker read no operator's block, and the breaker's half-open
    UNBLOCK lifted the scope although the operator never did. The topic is modelled as
    compaction leaves it (the latest value per key)."""
    topic: dict[bytes, bytes] = {}
    blocks = OperatorBlocks(JOBS)

    def publish(message: ControlMessage) -> None:
        if blocks.admit(message, NOW):
            key, value = _wire(message)
            topic[key] = value
            blocks.apply(key, value)

    key, value = _wire(_operator(ControlAction.BLOCK))
    topic[key] = value
    blocks.apply(key, value)
    publish(_jobs(ControlAction.BLOCK))  # the breaker opens
    restarted = OperatorBlocks(JOBS)
    for key, value in topic.items():  # the compacted topic, read from its beginning
        restarted.apply(key, value)
    assert not restarted.admit(_jobs(ControlAction.UNBLOCK), NOW)  # half-open: held back
