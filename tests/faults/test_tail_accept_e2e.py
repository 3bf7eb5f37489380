"""End to end: a chain held as unreadable after a crash is signed again on an operator's
recorded acceptance (`agentaudit accept-tail`). Real broker, real chDB, two sinks and a crash
(~36 s: the full matrix only); the fast case is tests/integration/test_tail_accept.py.

Before, such a chain was never signed again: its new events were stored unsigned for good.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from agentaudit.broker import ensure_topics
from agentaudit.errors import UserError
from agentaudit.settings import Settings
from agentaudit.sink.tail_accept import accept_tail, acceptance_payload
from agentaudit.sink.worker import SinkWorker
from agentaudit.store import open_store
from agentaudit.store.migrations import migrate
from agentaudit.trail.system_log import system_log
from agentaudit.trail.verdicts import summary
from agentaudit.verify.run import public_keys, verify_store
from tests.factories import event_dict, wire
from tests.faults.conftest import FULL
from tests.helpers_wait import poll_until
from tests.integration.helpers import produce_raw, sink_until
from tests.integration.helpers_trail import anchored_checkpoints
from tests.integration.test_trail_tail_check import (
    EDIT,
    GOOD,
    WIPE,
    _chain,
    _crash_after,
    _events,
)

pytestmark = pytest.mark.integration


@pytest.mark.skipif(not FULL, reason="full fault matrix only (./run faults)")
@pytest.mark.faults
async def test_an_unreadable_tail_is_signed_again_on_a_recorded_acceptance(
    settings: Settings,
) -> None:
    settings = settings.model_copy(update={"checkpoint_interval_s": 3600.0})
    await ensure_topics(settings)
    with open_store(settings, own=True) as store:
        migrate(store)
        await produce_raw(settings, _events(4))
        await sink_until(settings, store, lambda w: w.processor.counters.events_stored >= 20)
        await produce_raw(settings, _events(4))
        await _crash_after(settings, store, 20)  # rows 5..8 of every chain unsigned
        part = _chain(store, GOOD)[0]
        assert _chain(store, WIPE)[0] == part != _chain(store, EDIT)[0]
        # The partition's log replaced after GOOD's tail was stored (WIPE's tail now says it
        # is from log epoch 7, Kafka's log since): GOOD's rows, of epoch 0, cannot be checked.
        # EDIT's 6th row edited (its leaf no longer its columns'): forged.
        store.command(
            "ALTER TABLE agentaudit.events UPDATE log_epoch = 7 WHERE tenant_id = {t:String} "
            "AND chain_seq > 4 SETTINGS mutations_sync = 2",
            {"t": WIPE},
        )
        store.command(
            "ALTER TABLE agentaudit.events UPDATE cost_usd = 9 WHERE tenant_id = {t:String} "
            "AND chain_seq = 6 SETTINGS mutations_sync = 2",
            {"t": EDIT},
        )
        live = settings.model_copy(update={"checkpoint_interval_s": 1.0})
        worker = SinkWorker(live, store)
        task = asyncio.create_task(worker.run())
        try:
            await poll_until(
                lambda: (GOOD, part) in worker.trees.unreadable,
                60,
                "GOOD held unreadable",
                check=lambda: task.result() if task.done() else None,
            )
            held = anchored_checkpoints(settings, (GOOD, part))[-1]
            assert held.size == 4 and any(
                x.startswith("unreadable-tail 8 ") for x in held.extensions
            )
            # Held, its rows are pending (stored before the checkpoint stating them held,
            # which re-states size 4: not extra rows).
            held_report = verify_store(
                settings, store, public_keys(settings), tenant=GOOD, derived=False
            )
            assert summary(held_report) == (
                "3/3 checkpoints valid, 4/4 rows valid, 4 rows pending",
                True,
            ), summary(held_report)
            with pytest.raises(UserError, match="reason"):
                acceptance_payload(settings, GOOD, part, 8, " ")
            with pytest.raises(UserError, match=r"rows 5\.\.8; --through-seq 7"):
                acceptance_payload(settings, GOOD, part, 7, "power cut")
            epart = _chain(store, EDIT)[0]
            await poll_until(
                lambda: (EDIT, epart) in worker.trees.unsigned, 60, "EDIT refused", check=None
            )
            with pytest.raises(UserError, match="not held as unreadable"):
                acceptance_payload(settings, EDIT, epart, 8, "power cut")
            event_id = await asyncio.to_thread(
                accept_tail, settings, GOOD, part, 8, "dev box lost its log", "alice"
            )
            await produce_raw(settings, [(GOOD.encode(), wire(event_dict(tenant=GOOD)))])

            def signed_on() -> bool:
                cps = anchored_checkpoints(settings, (GOOD, part))
                return cps[-1].size >= 10 and any(
                    f"accepted {event_id}" in c.extensions for c in cps
                )

            await poll_until(signed_on, 60, "GOOD signed again")
            assert (GOOD, part) not in worker.trees.unsigned
        finally:
            worker.stop()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        accepted = [
            e
            for e in system_log(
                store, public_keys(settings), settings.deployment, ("tail_accepted",), GOOD
            )
        ]
        assert [(e.user_id, e.genuine, e.payload["through_seq"]) for e in accepted] == [
            ("alice", True, 8)
        ]
        reports = verify_store(settings, store, public_keys(settings), tenant=GOOD, derived=False)
        assert summary(reports)[1] is True, summary(reports)
