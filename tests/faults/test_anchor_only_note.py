"""A sink that dies between anchoring a checkpoint and inserting it into the checkpoints table
(a takeover's notes wait for the next poll: a crash loop hits that window) leaves a genuine
note in the anchor directory only. `agentaudit verify` reports it `not found` (exit 1); before,
on every later run too. The next sink to take the chain over now stores such a note."""

from __future__ import annotations

from datetime import UTC, datetime

from agentaudit.anchors import DirectoryAnchor
from agentaudit.broker import ensure_topics
from agentaudit.keyring import KeyRing
from agentaudit.settings import Settings
from agentaudit.store import open_store
from agentaudit.store.migrations import migrate
from agentaudit.trail.checkpoint import Checkpoint, origin_for, sign_checkpoint
from agentaudit.trail.verdicts import NOT_FOUND, summary
from agentaudit.verify.run import public_keys, verify_store
from tests.factories import event_dict, wire
from tests.integration.helpers import produce_raw
from tests.integration.helpers_trail import anchored_checkpoints, running_sink

# marked `faults` and `integration` by tests/faults/conftest.py (two sink runs)

TENANT = "anchor-only"


async def test_a_note_anchored_by_a_sink_that_died_is_stored_by_the_next(
    settings: Settings,
) -> None:
    settings = settings.model_copy(update={"checkpoint_interval_s": 0.2})
    await ensure_topics(settings)
    events = [(TENANT.encode(), wire(event_dict(tenant=TENANT))) for _ in range(5)]
    await produce_raw(settings, events)
    with open_store(settings, own=True) as store:
        migrate(store)
        async with running_sink(settings, store) as sink:
            await sink.wait(accepted=5, signed=2)
        part = int(
            store.query(
                "SELECT any(kafka_partition) FROM agentaudit.events WHERE tenant_id = {t:String}",
                {"t": TENANT},
            ).result_rows[0][0]
        )
        # The dead sink's last tick: anchored, never inserted into the table.
        last = anchored_checkpoints(settings, (TENANT, part))[-1]
        t = int(next(x for x in last.extensions if x.startswith("time "))[5:]) + 1
        origin = origin_for(settings.deployment, TENANT, part)
        note = sign_checkpoint(
            Checkpoint(origin, last.size, last.root_hash, (f"time {t}",)),
            [KeyRing.load(settings.key_dir).signer.renamed(origin)],
        )
        DirectoryAnchor(settings.checkpoints_dir).append(
            [(TENANT, part, note, datetime.fromtimestamp(t, UTC))]
        )
        keys = public_keys(settings)
        later = float(t + 10)  # the verifier starts well after the note (no same-second grace)
        reports = verify_store(
            settings, store, keys, tenant=TENANT, derived=False, clock=lambda: later
        )
        assert [ln.verdict for r in reports for ln in r.lines if ln.failing] == [NOT_FOUND]

        async with running_sink(settings, store) as sink:
            await sink.wait(signed=2)
        reports = verify_store(
            settings, store, keys, tenant=TENANT, derived=False, clock=lambda: later
        )
        # Before: still `not found (not in store)`.
        assert summary(reports)[1], [ln.render() for r in reports for ln in r.lines]
