"""A chain held as unreadable after a crash is signed again only on an operator's recorded
acceptance (`agentaudit accept-tail`, `agentaudit.sink.tail_accept`). Real chDB; the end to
end case (two sinks, a crash, the real broker) is tests/faults/test_tail_accept_e2e.py.

Before, a chain whose unsigned tail Kafka could not confirm was never signed again: its new
events were stored unsigned for good, and no command could change that.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import orjson
import pytest

from agentaudit.errors import UserError
from agentaudit.settings import Settings
from agentaudit.sink.rows import INGEST_TABLE
from agentaudit.sink.signing import TrailSigning
from agentaudit.sink.tail_accept import (
    EVENT_TYPE,
    SINCE_SLACK,
    acceptance_payload,
    acceptances,
    held_line,
)
from agentaudit.sink.trees import Tail
from agentaudit.store import open_store
from agentaudit.store.migrations import migrate
from agentaudit.system_events import signed_event, system_event
from agentaudit.trail.merkle import CompactTree
from agentaudit.verify.run import public_keys
from tests.integration.test_trail_tail_check import COLUMNS

pytestmark = pytest.mark.integration

HELD, FORGED, OTHER = "acc-held", "acc-forged", "acc-other"


def _tree(n: int) -> CompactTree:
    tree = CompactTree()
    tree.extend([bytes([i]) * 32 for i in range(1, n + 1)])
    return tree


def test_only_a_tail_the_sink_holds_unreadable_is_accepted_as_it_stands(
    settings: Settings,
) -> None:
    """Fast case: the held line is what the command reads; the sink acts only on a genuine
    acceptance naming exactly its held rows and root (events stored as a sink stores them)."""
    settings = settings.model_copy(update={"checkpoint_interval_s": 60.0})
    trail = TrailSigning.from_settings(settings)
    assert trail is not None
    tail = Tail(_tree(2), 5, _tree(5).root())
    trail.sign_prefix((HELD, 0), tail.signed, (held_line(tail, "Kafka holds epoch 1's log"),))
    trail.sign_prefix((FORGED, 0), _tree(2))  # a forged verdict: signed up to the good row
    with pytest.raises(UserError, match="reason"):
        acceptance_payload(settings, HELD, 0, 5, "")
    with pytest.raises(UserError, match=r"rows 3\.\.5; --through-seq 6"):
        acceptance_payload(settings, HELD, 0, 6, "power cut")
    for tenant in (FORGED, OTHER):
        with pytest.raises(UserError, match="not held as unreadable"):
            acceptance_payload(settings, tenant, 0, 5, "power cut")
    payload = acceptance_payload(settings, HELD, 0, 5, " power cut ")
    assert payload == {
        "partition": 0,
        "from_seq": 3,
        "through_seq": 5,
        "root": tail.root.hex(),
        "verdict": "unreadable: Kafka holds epoch 1's log",
        "reason": "power cut",
    }
    docs = [
        system_event(EVENT_TYPE, HELD, payload, user_id="mallory"),  # unsigned: forged
        signed_event(settings, EVENT_TYPE, HELD, {**payload, "root": "0" * 64}),  # other rows
    ]
    genuine = signed_event(settings, EVENT_TYPE, HELD, payload, user_id="alice")
    docs.append(genuine)  # the newest: the others come first
    with open_store(settings, own=True) as store:
        migrate(store)
        rows = [
            (orjson.dumps(d), Decimal(0), True, "", settings.events_topic, 0, i, 0, i + 1)
            for i, d in enumerate(docs)
        ]
        store.insert(
            INGEST_TABLE,
            [list(c) for c in zip(*rows, strict=True)],
            COLUMNS[:9],
        )
        keys = public_keys(settings)
        held, since = {(HELD, 0): tail}, datetime.now(UTC)
        assert acceptances(store, keys, settings.deployment, held, since) == {
            (HELD, 0): genuine["event_id"]
        }
        assert acceptances(store, keys, settings.deployment, {(HELD, 0): _tail6()}, since) == {}
        # Dated more than SINCE_SLACK before the tail was held: not read.
        later = since + SINCE_SLACK + timedelta(minutes=1)
        assert acceptances(store, keys, settings.deployment, held, later) == {}


def _tail6() -> Tail:
    """The tail as a sink that took over later holds it (one more row): not this acceptance's."""
    return Tail(_tree(2), 6, _tree(6).root())
