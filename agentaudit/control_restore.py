"""Put the blocks in force back on a control topic that lost them (`agentaudit restore-blocks`).

The kill switch's state lives in the compacted control topic. A broker that loses its data
(the local one keeps nothing across a restart; a topic deleted and recreated in production)
loses every block with it: SDKs already running keep theirs, but an agent started afterwards
reads an empty topic and runs, its operator's block silently gone. The record sink keeps every
control message in `agentaudit.control`; this puts back, under its scope key, the newest
stored message of each scope whose newest is a block still in force and which the topic does
not hold (or holds only an older message for). Newest and older are in the order the record
sink read the log (`Position`), as the SDK applied them, never by `issued_at` (`lacking`).
The stored bytes are published as they are, so the record keeps its id and the sink does not
store it twice. Stored messages are read as the SDK reads them (`decode_control`): a newer
CLI's block with a field this version does not know was obeyed by the agents, so it is
restored, unknown fields and all. Tombstones are not stored: a block lifted by a hand-made
tombstone instead of `agentaudit unblock` comes back.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime

from agentaudit.control_plane import DEFAULT_TIMEOUT_S, produce, read_controls
from agentaudit.settings import Settings
from agentaudit.store.protocol import Store
from agentaudit_schemas.records import ControlAction, ControlMessage
from agentaudit_sdk.control import InvalidRecord, decode_control

log = logging.getLogger("agentaudit.control_plane")

Position = tuple[datetime, int]
"""Where a stored message sits in the order the record sink read the topic: (ingested_at,
kafka_offset). A scope's records share a key and so a partition, which the sink reads in
offset order: this is the order the SDK applied them in."""

_NEWEST_SQL = """
SELECT scope_key, argMax(record, (ingested_at, kafka_offset)), max((ingested_at, kafka_offset))
FROM agentaudit.control
GROUP BY scope_key ORDER BY scope_key
SETTINGS readonly = 1"""
_POSITIONS_SQL = """
SELECT control_id, min((ingested_at, kafka_offset))
FROM agentaudit.control WHERE control_id IN {ids:Array(String)}
GROUP BY control_id
SETTINGS readonly = 1"""


def lacking(
    stored: list[tuple[ControlMessage, Position]],
    on_topic: Mapping[str, ControlMessage],
    positions: Mapping[str, Position],
) -> list[ControlMessage]:
    """The stored newest messages of their scope that the topic lost: it holds nothing under
    the scope key, or a message the store read before this one (`positions`: where the store
    first holds each message the topic holds). A message the topic holds that came after,
    or that the store does not hold yet (newer than all it read), is the scope's state.

    Not by `issued_at`: that is the issuer's clock. A breaker's BLOCK stamped by a jobs host
    a few seconds ahead and lifted at once by an operator's UNBLOCK stamped earlier was
    "newer" than the UNBLOCK the topic held, and restore-blocks re-blocked a lifted scope."""
    out = []
    for msg, position in stored:
        held = on_topic.get(msg.scope.key)
        if held is None:
            out.append(msg)
        elif held.control_id != msg.control_id:
            seen = positions.get(held.control_id)
            if seen is not None and seen < position:
                out.append(msg)
    return out


async def restore_blocks(
    settings: Settings, store: Store, now: datetime, *, timeout: float = DEFAULT_TIMEOUT_S
) -> list[ControlMessage]:
    """Publish the stored blocks in force at `now` that the control topic lacks; returns
    them (sorted by scope key). Nothing is published when none is missing."""
    stored: dict[str, tuple[ControlMessage, bytes, Position]] = {}
    for key, raw, (ingested_at, offset) in store.query(_NEWEST_SQL).result_rows:
        data = raw.encode() if isinstance(raw, str) else bytes(raw)
        try:
            msg = decode_control(data)
        except InvalidRecord:
            log.warning("skipped the stored control message of %r: not valid", key)
            continue
        if msg.action is ControlAction.BLOCK and (msg.until is None or msg.until > now):
            stored[msg.control_id] = (msg, data, (ingested_at, offset))
    if not stored:
        return []
    on_topic = await read_controls(settings, timeout=timeout)
    ids = sorted({m.control_id for m in on_topic.values()})
    positions: dict[str, Position] = {
        cid: (at, offset)
        for cid, (at, offset) in store.query(_POSITIONS_SQL, {"ids": ids}).result_rows
    }
    missing = lacking([(m, p) for m, _, p in stored.values()], on_topic, positions)
    if missing:
        records = [(msg.scope.key, stored[msg.control_id][1]) for msg in missing]
        await produce(settings, settings.control_topic, records, timeout)
    return missing
