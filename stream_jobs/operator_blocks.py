"""Operators' blocks on the control topic, which the jobs' own control messages must not lift.

The control topic is compacted and keyed by scope: the SDK takes the latest message of a
scope as its state. An operator's `agentaudit block` and the jobs' budget and breaker
blocks share those keys, so the jobs' UNBLOCK of a scope (a budget window reset, a breaker
going half-open or closed, a budget removed, a replayed UNBLOCK re-published after a crash)
silently lifted an operator's block of the same scope, and a jobs' BLOCK with an `until`
turned an operator's indefinite block into one that lifts at the budget window's end.

`OperatorBlocks` follows the topic (every worker reads all of it) and holds, per scope key,
the operator block in force: the latest BLOCK with reason `manual` that the jobs did not
issue, until an UNBLOCK the jobs did not issue (the operator's `unblock`) or its `until`.
While one holds, the jobs publish no UNBLOCK of that scope, nor a BLOCK lifting before the
operator's: the scope stays blocked by the operator, who lifts it (the transitions and
alerts are still published). Against an operator's block with an `until`, a jobs' BLOCK that
lasts at least as long (a breaker's, until unblocked) is published: the scope stays blocked
at least as long as the operator said. Against an indefinite one, no jobs' BLOCK is
published (it could only replace the operator's record): on a compacted topic the operator's
BLOCK was then removed by compaction, a restarted worker read no operator's block any more,
and the breaker's next UNBLOCK (half-open) lifted a block the operator never lifted.
The newest message held back per scope is published when the operator's block ends by its
`until` (`released`): the scope must then be in the state the jobs decided meanwhile (a
breaker's BLOCK admitted over the operator's must not outlive it when the breaker went
half-open). An operator's UNBLOCK drops it: the operator decided.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from agentaudit_schemas.records import (
    HEARTBEAT_KEY_PREFIX,
    ControlAction,
    ControlMessage,
    ControlReason,
)
from agentaudit_sdk.control import InvalidRecord, decode_control

__all__ = ["OperatorBlocks"]

log = logging.getLogger("agentaudit.stream_jobs")
_NEVER = None
_ENDED = datetime.min.replace(tzinfo=UTC)
"""The `until` of an operator's block a tombstone ended: past at any `now`."""


class OperatorBlocks:
    """Per scope key, the operator's block in force (its `until`, None = until unblocked)."""

    def __init__(self, issued_by: str) -> None:
        self.issued_by = issued_by
        """Who the jobs' own control messages name: those are not an operator's."""
        self._blocks: dict[str, datetime | None] = {}
        self._held: dict[str, ControlMessage] = {}
        """Per scope, the newest jobs' message not published while the operator's block holds."""

    def apply(self, key: bytes | None, value: bytes | None) -> ControlMessage | None:
        """One control-topic record (heartbeats and invalid records are skipped: the SDK
        reports invalid ones; a tombstone ends the scope's operator's block, see the module).
        Returns an operator's UNBLOCK (the breakers re-arm on it:
        `StreamJobs.operator_unblocked`)."""
        if key is None or key.startswith(HEARTBEAT_KEY_PREFIX.encode()):
            return None
        if not value:
            self._tombstone(key)
            return None
        try:
            # As the SDK reads it: a newer CLI's block with a field this version does not
            # know is in force for the agents, so it must hold here too (strictly parsed, it
            # was skipped and the jobs' UNBLOCK of the scope lifted it)
            message = decode_control(value)
        except InvalidRecord:
            return None
        if message.issued_by == self.issued_by:
            return None
        scope = message.scope.key
        if message.action is ControlAction.UNBLOCK:
            self._blocks.pop(scope, None)
            self._held.pop(scope, None)
            return message
        if message.reason is ControlReason.MANUAL:
            self._blocks[scope] = message.until
        return None

    def _tombstone(self, key: bytes) -> None:
        """The SDK forgets the scope (`agentaudit_sdk.control`, the same text of the key): an
        operator's block of it ends now; `released` publishes what was held back."""
        scope = key.decode("utf-8", "surrogateescape")
        if scope in self._blocks:
            self._blocks[scope] = _ENDED

    def holds(self, scope_key: str, now: datetime) -> bool:
        """True while an operator's block of exactly this scope is in force at `now`."""
        if scope_key not in self._blocks:
            return False
        until = self._blocks[scope_key]
        return until is _NEVER or until > now

    def admit(self, message: ControlMessage, now: datetime) -> bool:
        """Whether the jobs may publish `message` (False: an operator's block holds, and the
        message would lift it or shorten it)."""
        key = message.scope.key
        if not self.holds(key, now):
            # newer than anything held back (a block ended by `until` or a tombstone and not
            # yet `released`): publishing the held one after it would undo it
            self._held.pop(key, None)
            return True
        if message.action is ControlAction.BLOCK:
            mine, theirs = message.until, self._blocks[key]
            # an indefinite operator's block is never outlasted: publishing would only put
            # the jobs' record where compaction keeps one per scope (module doc)
            if theirs is not _NEVER and (mine is _NEVER or mine >= theirs):
                self._held.pop(key, None)  # this one is newer than what was held back
                return True
        self._held[key] = message
        log.warning(
            "not publishing %s of %s (%s): an operator's block of the scope is in force; "
            "published when that block ends by itself, dropped if the operator lifts it",
            message.action.value,
            message.scope.key,
            message.reason.value,
        )
        return False

    def released(self, now: datetime) -> list[ControlMessage]:
        """The messages held back for scopes whose operator's block ended by its `until`
        before `now`: publish them now (call from the timer)."""
        out = []
        for key in [k for k, until in self._blocks.items() if until is not _NEVER and until <= now]:
            del self._blocks[key]
            held = self._held.pop(key, None)
            if held is not None:
                out.append(held)
        return out
