"""A checkpoint signed while an insert is in flight: `verify` judges a row after a chain's last
checkpoint whose `ingested_at` (the insert's start, on the store's clock) is before that
checkpoint's `time` as an extra row, since the sink signs only what the store acknowledged.
An insert started before a tick and acknowledged after it broke that: the tick signed without
those rows, and `verify` reported them `extra rows` (exit 1) until the next tick covered them:
a false alarm in any interval where a tick lands on a slow insert.

The real sink and chDB; the store acknowledges one insert late (the rows are stored at once,
the call returns when the test lets it), and a second passes meanwhile so a tick's `time`
line (whole seconds) is past the rows' `ingested_at`."""

from __future__ import annotations

import time

from agentaudit.broker import ensure_topics
from agentaudit.settings import Settings
from agentaudit.store import open_store
from agentaudit.store.migrations import migrate
from tests.factories import event_dict, wire
from tests.helpers_wait import poll_until
from tests.integration.held_store import HeldInsert
from tests.integration.helpers import produce_raw
from tests.integration.helpers_trail import anchored_checkpoints, running_sink

# marked `faults` and `integration` by tests/faults/conftest.py (a sink run of a few seconds)

TENANT = "slow-ack"


def _batch(n: int) -> list[tuple[bytes, bytes]]:
    return [(TENANT.encode(), wire(event_dict(tenant=TENANT, kind="tool_call"))) for _ in range(n)]


async def test_no_tick_signs_past_an_insert_in_flight(settings: Settings) -> None:
    settings = settings.model_copy(update={"checkpoint_interval_s": 0.2})
    await ensure_topics(settings)
    with open_store(settings, own=True) as real:
        migrate(real)
        store = HeldInsert(real, stored_first=True, armed=False)
        async with running_sink(settings, store) as sink:  # type: ignore[arg-type]
            await produce_raw(settings, _batch(5))
            await sink.wait(accepted=5, signed=2)
            store.armed = True
            await produce_raw(settings, _batch(5))
            await poll_until(store.held.is_set, 30, "the second insert stored")
            stored_at = time.time()
            # Ticks come every 0.2 s; once a whole second has passed, a tick's time line is
            # past the rows' ingested_at.
            await poll_until(lambda: time.time() > stored_at + 1.2, 5, "a second to pass")
            store.release.set()
            await sink.wait(accepted=10)
        rows = real.query(
            "SELECT kafka_partition, chain_seq, toUnixTimestamp64Micro(ingested_at) / 1e6 "
            "FROM agentaudit.events WHERE tenant_id = {t:String}",
            {"t": TENANT},
        ).result_rows
    assert len(rows) == 10
    part = int(rows[0][0])
    for cp in anchored_checkpoints(settings, (TENANT, part)):
        t = int(next(x for x in cp.extensions if x.startswith("time "))[5:])
        early = [seq for _, seq, at in rows if at < t and seq > cp.size]
        # Before: a tick during the late insert signed size 5 at a time after rows 6-10.
        assert not early, f"checkpoint size {cp.size} time {t} misses rows ingested before it"
