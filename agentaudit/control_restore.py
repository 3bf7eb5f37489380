"""Put the blocks in force back on a control topic that lost them (`agentaudit restore-blocks`).

The kill switch's state lives in the compacted control topic. A broker that loses its data
(the local one keeps nothing across a restart; a topic deleted and recreated in production)
loses every block with it: SDKs already running keep theirs, but an agent started afterwards
reads an empty topic and runs, its operator's block silently gone. The record sink keeps every
control message in `agentaudit.control`; this puts back, under its scope key, the newest
stored message of each scope whose newest is a block still in force and which the topic does
not hold (or holds only an older message for). The stored bytes are published as they are,
so the record keeps its id and the sink does not store it twice. Stored messages are read as
the SDK reads them (`decode_control`): a newer CLI's block with a field this version does not
know was obeyed by the agents, so it is restored, unknown fields and all. Tombstones are not
stored: a block lifted by a hand-made tombstone instead of `agentaudit unblock` comes back.
"""

from __future__ import annotations

import logging
from datetime import datetime

from agentaudit.control_plane import DEFAULT_TIMEOUT_S, produce, read_controls
from agentaudit.settings import Settings
from agentaudit.store.protocol import Store
from agentaudit_schemas.records import ControlAction, ControlMessage
from agentaudit_sdk.control import InvalidRecord, decode_control

log = logging.getLogger("agentaudit.control_plane")

_NEWEST_SQL = """
SELECT scope_key, argMax(record, (issued_at, kafka_offset))
FROM agentaudit.control
GROUP BY scope_key ORDER BY scope_key
SETTINGS readonly = 1"""


async def restore_blocks(
    settings: Settings, store: Store, now: datetime, *, timeout: float = DEFAULT_TIMEOUT_S
) -> list[ControlMessage]:
    """Publish the stored blocks in force at `now` that the control topic lacks; returns
    them (sorted by scope key). Nothing is published when none is missing."""
    stored: list[tuple[ControlMessage, bytes]] = []
    for key, raw in store.query(_NEWEST_SQL).result_rows:
        data = raw.encode() if isinstance(raw, str) else bytes(raw)
        try:
            msg = decode_control(data)
        except InvalidRecord:
            log.warning("skipped the stored control message of %r: not valid", key)
            continue
        if msg.action is ControlAction.BLOCK and (msg.until is None or msg.until > now):
            stored.append((msg, data))
    if not stored:
        return []
    on_topic = await read_controls(settings, timeout=timeout)
    missing = [
        (msg, data)
        for msg, data in stored
        if (held := on_topic.get(msg.scope.key)) is None or held.issued_at < msg.issued_at
    ]
    if missing:
        records = [(msg.scope.key, data) for msg, data in missing]
        await produce(settings, settings.control_topic, records, timeout)
    return [msg for msg, _ in missing]
