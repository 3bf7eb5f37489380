"""Events agentaudit writes about itself (agentaudit.system_events): valid by the contract,
published with acknowledgement, and stored and chained by the sink like any agent's event."""

from __future__ import annotations

import pydantic
import pytest

from agentaudit.broker import ensure_topics
from agentaudit.settings import Settings
from agentaudit.store import open_store
from agentaudit.store.migrations import migrate
from agentaudit.system_events import AGENT_ID, apublish, system_event
from tests.integration.helpers import sink_until

pytestmark = pytest.mark.integration


def test_a_payload_that_breaks_the_contract_is_the_callers_bug() -> None:
    with pytest.raises(pydantic.ValidationError):
        system_event("tool_call", "acme", {"tool": "x"})


async def test_published_system_events_are_stored_in_their_tenants_chain(
    settings: Settings,
) -> None:
    await ensure_topics(settings)
    payload = {
        "tool": "erase",
        "action": "erase",
        "args_hash": "0" * 64,
        "side_effect": "write",
        "latency_ms": 1.0,
    }
    events = [system_event("tool_call", t, payload, user_id="ops") for t in ("se-a", "se-b")]
    await apublish(settings, events)
    with open_store(settings, own=True) as store:
        migrate(store)
        await sink_until(settings, store, lambda w: w.processor.counters.accepted >= 2)
        rows = store.query(
            "SELECT tenant_id, agent_id, user_id, chain_seq FROM agentaudit.events "
            "ORDER BY tenant_id"
        ).result_rows
    assert [tuple(r) for r in rows] == [("se-a", AGENT_ID, "ops", 1), ("se-b", AGENT_ID, "ops", 1)]
