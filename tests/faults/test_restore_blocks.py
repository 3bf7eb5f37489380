"""A broker that comes back empty loses every block; `restore-blocks` puts them back from the
store (marked `faults` by tests/faults/conftest.py: a store costs 5 s to set up)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agentaudit.broker import LocalBroker, ensure_topics
from agentaudit.control_plane import manual_control, publish_control, read_controls
from agentaudit.control_restore import restore_blocks
from agentaudit.settings import Settings
from agentaudit.sink.pipeline_records.rows import CONTROL
from agentaudit.sink.rows import Source
from agentaudit.store import open_store
from agentaudit.store.migrations import migrate
from agentaudit_schemas.records import ControlAction, ControlMessage, Scope
from tests.conftest import isolated_settings
from tests.faults.conftest import FULL

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


def _msg(
    tenant: str, action: ControlAction, minutes: int, until: datetime | None = None
) -> ControlMessage:
    at = NOW + timedelta(minutes=minutes)
    return manual_control(Scope(tenant_id=tenant), action, issued_by="oncall", now=at, until=until)


def test_blocks_lost_with_the_broker_are_restored_from_the_store(tmp_path: Path) -> None:
    with LocalBroker() as own:
        settings = isolated_settings(own.bootstrap, tmp_path)
        history = [
            _msg("acme", ControlAction.BLOCK, 0),  # in force: comes back
            _msg("globex", ControlAction.BLOCK, 1),
            _msg("globex", ControlAction.UNBLOCK, 2),  # lifted: stays lifted
            _msg("initech", ControlAction.BLOCK, 3, until=NOW + timedelta(minutes=4)),  # over
        ]

        async def publish_all() -> None:
            await ensure_topics(settings)
            for msg in history:
                await publish_control(settings, msg)

        asyncio.run(publish_all())
        with open_store(settings, own=True) as store:
            migrate(store)
            # what the record sink stored from the topic
            rows = [
                CONTROL.row(m, m.model_dump_json().encode(), Source("c", 0, i, 0, None))
                for i, m in enumerate(history)
            ]
            store.insert(CONTROL.table, [list(c) for c in zip(*rows, strict=True)], CONTROL.columns)
            own.stop()
            own.start()  # empty: the blocks are gone from the topic
            assert asyncio.run(read_controls(settings)) == {}
            later = NOW + timedelta(hours=1)
            restored = asyncio.run(restore_blocks(settings, store, later))
            assert [m.scope.key for m in restored] == ["tenant=acme"]
            on_topic = asyncio.run(read_controls(settings))
            assert on_topic == {"tenant=acme": history[0]}
            assert asyncio.run(restore_blocks(settings, store, later)) == []  # once


@pytest.mark.skipif(not FULL, reason="~3.5 s, a store: ./run faults (unit case in CI)")
def test_a_block_lifted_by_an_unblock_stamped_earlier_is_not_restored(settings: Settings) -> None:
    """The jobs' host clock 3 s ahead: its BLOCK is stamped after the operator's UNBLOCK that
    lifted it and was written after it. The agents obey the UNBLOCK. Before, restore-blocks
    took the newest stored message by `issued_at` (the BLOCK) and, the topic's UNBLOCK being
    stamped earlier, published the BLOCK again: the lifted scope was blocked, topic intact."""
    scope = Scope(tenant_id="acme", agent_id="bot")
    block = manual_control(
        scope, ControlAction.BLOCK, issued_by="jobs", now=NOW + timedelta(seconds=5)
    )
    unblock = manual_control(
        scope, ControlAction.UNBLOCK, issued_by="oncall", now=NOW + timedelta(seconds=2)
    )

    async def publish_both() -> None:
        await ensure_topics(settings)
        await publish_control(settings, block)
        await publish_control(settings, unblock)

    asyncio.run(publish_both())
    with open_store(settings, own=True) as store:
        migrate(store)
        rows = [
            CONTROL.row(m, m.model_dump_json().encode(), Source("c", 0, i, 0, None))
            for i, m in enumerate([block, unblock])  # as the sink read them: in log order
        ]
        store.insert(CONTROL.table, [list(c) for c in zip(*rows, strict=True)], CONTROL.columns)
        assert asyncio.run(restore_blocks(settings, store, NOW + timedelta(minutes=1))) == []
        assert asyncio.run(read_controls(settings)) == {scope.key: unblock}
