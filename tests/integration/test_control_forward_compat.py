"""A block written by a newer CLI or pipeline (one field this version does not know), end to
end on the real broker and chDB: the SDK obeys it, so the record sink must store it (typed
columns for the known fields, the record as published) and `restore-blocks` must put it back
on a control topic that lost it. Before, the sink parsed it strictly and dead-lettered it
(`schema_violation`, "Extra inputs are not permitted"): the trail held no copy of a block the
agents obeyed, and restore-blocks could not restore it."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest

from agentaudit.broker import ensure_topics
from agentaudit.control_plane import manual_control, read_controls
from agentaudit.control_restore import restore_blocks
from agentaudit.settings import Settings
from agentaudit.store import open_store
from agentaudit.store.migrations import migrate
from agentaudit_schemas.records import ControlAction, Scope
from agentaudit_sdk import Blocked, Client
from tests.faults.conftest import FULL
from tests.integration.helpers import produce_raw
from tests.integration.test_record_sink import handled, records_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.faults,
    # an SDK client, a store and a record sink: ~8 s. The fast case in CI: the verdicts corpus,
    # tests/unit/sink/pipeline_records/test_control_verdicts.py
    pytest.mark.skipif(not FULL, reason="~8 s: ./run faults"),
]
WAIT_S = 10.0
NOW = datetime(2026, 11, 21, 12, tzinfo=UTC)


def test_a_newer_block_the_sdk_obeys_is_stored_and_restorable(settings: Settings) -> None:
    asyncio.run(ensure_topics(settings))
    block = manual_control(
        Scope(tenant_id="acme", agent_id="support-bot"),
        ControlAction.BLOCK,
        issued_by="oncall",
        now=NOW,
    )
    doc = json.loads(block.model_dump_json())
    doc["ticket"] = "INC-7"  # a newer CLI's field
    doc["scope"]["region"] = "eu"  # and a newer scope part
    raw = json.dumps(doc).encode()

    client = Client.from_settings(
        settings, tenant_id="acme", agent_id="support-bot", reconnect_backoff=(0.05, 0.5)
    )
    control = client.control
    try:
        assert control.wait_ready(WAIT_S), control.stats
        asyncio.run(
            produce_raw(settings, [(block.scope.key.encode(), raw)], settings.control_topic)
        )
        assert control.wait_for(lambda: control.blocked("acme", None, "support-bot"), WAIT_S)
        with pytest.raises(Blocked) as refused:
            client.check()
        assert refused.value.reason == "manual"
    finally:
        client.shutdown(10)

    with open_store(settings, own=True) as store:
        migrate(store)
        sink = asyncio.run(records_until(settings, store, handled(1)))
        dead = store.query("SELECT reason, detail FROM agentaudit.dead_letters").result_rows
        assert dead == [], f"the sink dead-lettered a block the SDK obeys: {dead}"
        assert sink.processor.counters.stored == {"control": 1}
        rows = store.query(
            "SELECT control_id, scope_key, tenant_id, agent_id, action, reason, issued_by, "
            "record FROM agentaudit.control"
        ).result_rows
        assert rows == [
            (
                block.control_id,
                "tenant=acme/agent=support-bot",
                "acme",
                "support-bot",
                "block",
                "manual",
                "oncall",
                raw.decode(),  # the trail holds what the agents obeyed, unknown fields too
            )
        ]

        # The topic lost it (a new, empty control topic stands in for a broker that came back
        # empty): restore-blocks publishes the stored bytes as they were.
        lost = settings.model_copy(update={"control_topic": settings.control_topic + ".new"})
        asyncio.run(ensure_topics(lost))
        restored = asyncio.run(restore_blocks(lost, store, NOW))
        assert [m.scope.key for m in restored] == ["tenant=acme/agent=support-bot"]
        assert asyncio.run(read_controls(lost)) == {block.scope.key: block}
