"""Erasure of content the sink has not sealed yet: real broker, sink, chDB and `erase`.

`agentaudit erase` destroys the keys a subject has when it runs. Before, content of the subject
that reached the sink only afterwards (the sink behind or down when `erase` ran, an event
re-sent from an SDK spool) was sealed with a NEW key, which nothing destroyed: `reveal` read it
in plaintext for good, and `erase` had said "keys destroyed: none existed". Now what occurred
by the erasure is sealed with a key never stored; what occurs after it stays readable.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agentaudit.broker import ensure_topics
from agentaudit.settings import Settings
from agentaudit.store import open_store
from agentaudit.store.migrations import migrate
from agentaudit.subjects.erasure import erase_subject, reveal_event
from agentaudit.trail.verdicts import summary
from agentaudit.verify.run import public_keys, verify_store
from tests.factories import wire
from tests.integration.helpers import produce_raw, sink_until
from tests.integration.test_erasure import content_event, event_ids, isolated_keys

# ~10 s (a sink's start); the fast case: tests/unit/subjects/test_erasure_marks.py
pytestmark = [pytest.mark.integration, pytest.mark.faults]

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # pinned: the events' times and the erasure's
ERASED_AT = T0 + timedelta(hours=1)


def at(doc: dict[str, Any], when: datetime) -> dict[str, Any]:
    doc["occurred_at"] = when.isoformat()
    return doc


def prompts(settings: Settings, store: Any, tenant: str, user: str) -> list[Any]:
    return [
        reveal_event(settings, store, e).doc["payload"]["content"]["prompt"]
        for e in event_ids(store, tenant, user)
    ]


async def test_content_that_reaches_the_sink_after_its_erasure_is_erased_on_arrival(
    settings: Settings, tmp_path: Path
) -> None:
    settings = isolated_keys(settings, tmp_path)
    await ensure_topics(settings)
    # Sent before the erasure; the sink is down (no key of u-1 exists yet).
    before = [at(content_event("late", u, i), T0) for i in range(2) for u in ("u-1", "u-2")]
    await produce_raw(settings, [(b"late", wire(d)) for d in before])
    with open_store(settings, own=True) as store:
        migrate(store)
        await asyncio.to_thread(
            erase_subject,
            settings,
            "late",
            "u-1",
            "request 8",
            "dpo",
            store=store,
            now=lambda: ERASED_AT,
        )
        # After it: one event that occurred after the erasure, and one from before it re-sent
        # from a spool.
        after = at(content_event("late", "u-1", 7), ERASED_AT + timedelta(minutes=5))
        spooled = at(content_event("late", "u-1", 8), ERASED_AT - timedelta(minutes=5))
        await produce_raw(settings, [(b"late", wire(after)), (b"late", wire(spooled))])
        await sink_until(settings, store, lambda w: w.processor.counters.accepted >= 7)

        mine = prompts(settings, store, "late", "u-1")
        readable = [p for p in mine if isinstance(p, str)]
        assert readable == ["SECRET-late-u-1-7 prompt"], mine  # only what occurred after
        assert len(mine) == 4 and all(
            p == {"erased": True, "kid": p["kid"]} for p in mine if not isinstance(p, str)
        )
        assert sorted(prompts(settings, store, "late", "u-2")) == [
            "SECRET-late-u-2-0 prompt",
            "SECRET-late-u-2-1 prompt",
        ]
        text, ok = summary(verify_store(settings, store, public_keys(settings)))
        assert ok, text
