"""A reused event_id after a sink restart, through the real broker: a dead letter
`event_id_conflict`, and a byte-identical re-send still dropped (the fast case, chDB only:
tests/integration/test_sink_dedup_restart.py). Full matrix only: two consumer-group joins cost
~12 s against the local broker."""

from __future__ import annotations

import pytest

from agentaudit.broker import ensure_topics
from agentaudit.settings import Settings
from agentaudit.store import open_store
from agentaudit.store.migrations import migrate
from tests.factories import event_dict, wire
from tests.faults.conftest import FULL
from tests.integration.helpers import produce_raw, scalar, sink_until
from tests.integration.test_sink_dedup_restart import sealed_docs


@pytest.mark.skipif(not FULL, reason="full matrix only (FAULT_MATRIX=full)")
async def test_a_reused_event_id_after_a_restart_is_a_conflict_and_a_resend_still_dropped(
    settings: Settings,
) -> None:
    await ensure_topics(settings)
    docs = sealed_docs(5)
    await produce_raw(settings, [(b"acme", wire(d)) for d in docs])
    with open_store(settings, own=True) as store:
        migrate(store)
        await sink_until(settings, store, lambda w: w.processor.counters.events_stored >= 5)
    # A new sink process (new group: positions come from the store): a byte-identical re-send
    # of one event, and another event under a third one's id.
    reused = event_dict(kind="tool_call") | {"event_id": docs[2]["event_id"]}
    await produce_raw(settings, [(b"acme", wire(docs[0])), (b"acme", wire(reused))])
    settings = settings.model_copy(update={"consumer_group": settings.consumer_group + "-b"})
    with open_store(settings, own=True) as store:
        worker = await sink_until(
            settings,
            store,
            lambda w: (
                w.processor.counters.duplicates + w.processor.counters.dead_letters_stored >= 2
            ),
        )
        c = worker.processor.counters
        assert (c.accepted, c.duplicates, c.dead_lettered) == (0, 1, 1)
        assert scalar(store, "SELECT count() FROM agentaudit.events") == 5
        rows = store.query(
            "SELECT reason, event_id, original FROM agentaudit.dead_letters"
        ).result_rows
        assert [(r[0], r[1]) for r in rows] == [("event_id_conflict", docs[2]["event_id"])]
        assert rows[0][2] == wire(reused).decode()
        sealed = "SELECT countIf(position(payload, 'hi 0') > 0) FROM agentaudit.events"
        assert scalar(store, sealed) == 0  # the stored content is sealed: not what was sent
