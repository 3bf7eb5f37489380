"""The worker applies retention periodically, beside the sink (issue 11 D).

`serve_worker` runs in this process on a real broker and chDB with an injected sweep clock:
`now` 31 days ahead (the sink accepts the sweep's later `occurred_at`: `max_clock_skew_s`
lifted), and `sleep` a gate the test opens, so each sweep runs exactly when the test says.
The first sweep (at start) finds no policy; the second fails (the clock raises): logged at
ERROR, the sink goes on storing; the third cuts the tenant's prefix. Stopping the worker
while the sweeper waits runs no further sweep; `verify` then passes with `expired by policy`.
"""

from __future__ import annotations

import asyncio
import io
import logging
from datetime import UTC, datetime, timedelta

import pytest
from rich.console import Console

from agentaudit.retention.periodic import SweepClock
from agentaudit.retention.policy import set_retention
from agentaudit.services import serve_worker
from agentaudit.settings import Settings
from agentaudit.store import open_store
from agentaudit.store.protocol import Store
from agentaudit.trail.verdicts import EXPIRED, summary
from agentaudit.verify.run import public_keys, verify_store
from tests.factories import event_dict, wire
from tests.helpers_wait import poll_until
from tests.integration.helpers import produce_raw, scalar, served_store

pytestmark = pytest.mark.integration

TENANT = "rw-a"
PER_BATCH = 20
# Chains whose newest checkpoint does not yet cover their last row (0 = all signed).
_UNSIGNED = """
SELECT count() FROM (SELECT tenant_id, kafka_partition, max(chain_seq) AS last
                     FROM agentaudit.events GROUP BY tenant_id, kafka_partition) AS e
LEFT JOIN (SELECT tenant_id, kafka_partition, max(tree_size) AS size
           FROM agentaudit.checkpoints GROUP BY tenant_id, kafka_partition) AS c
USING (tenant_id, kafka_partition) WHERE c.size < e.last"""


def _batch() -> list[tuple[bytes, bytes]]:
    return [(TENANT.encode(), wire(event_dict(tenant=TENANT))) for _ in range(PER_BATCH)]


class Gate:
    """The sweeper's `sleep`: returns when the test lets the next sweep run."""

    def __init__(self) -> None:
        self.waits = 0
        self._go: asyncio.Queue[None] = asyncio.Queue()

    async def sleep(self, _seconds: float) -> None:
        self.waits += 1
        await self._go.get()

    def open(self) -> None:
        self._go.put_nowait(None)


async def _stored_and_signed(store: Store, rows: int, worker: asyncio.Task[None]) -> None:
    def done() -> bool:
        n = scalar(store, f"SELECT count() FROM agentaudit.events WHERE tenant_id = '{TENANT}'")
        return bool(n == rows and scalar(store, _UNSIGNED) == 0)

    await poll_until(
        done,
        60,
        f"{rows} rows of {TENANT} stored and signed",
        check=lambda: worker.result() if worker.done() else None,
    )


async def _swept(gate: Gate, n: int, worker: asyncio.Task[None]) -> None:
    await poll_until(
        lambda: gate.waits >= n,
        60,
        f"sweep {n} done",
        check=lambda: worker.result() if worker.done() else None,
    )


async def test_the_worker_sweeps_periodically_survives_a_failed_sweep_and_stops_cleanly(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    # The sweep's clock is 31 days ahead of every event: time passed, so it is vouched for.
    settings = settings.model_copy(
        update={
            "checkpoint_interval_s": 0.2,
            "max_clock_skew_s": 1e9,
            "stream_jobs": False,
            "retention_clock_tolerance_s": 40 * 86_400.0,
        }
    )
    later = datetime.now(UTC) + timedelta(days=31)
    faults = [RuntimeError("clock fault")]

    def now() -> datetime:
        if faults:
            raise faults.pop()
        return later

    gate, stop = Gate(), asyncio.Event()
    worker = asyncio.create_task(
        serve_worker(
            settings,
            stop,
            Console(file=io.StringIO()),
            sweep_clock=SweepClock(now=now, sleep=gate.sleep),
        )
    )
    await _swept(gate, 1, worker)  # at start: no policy, nothing to do
    async with served_store(settings, worker) as store:
        await produce_raw(settings, _batch())
        await _stored_and_signed(store, PER_BATCH, worker)
        await asyncio.to_thread(set_retention, settings, store, TENANT, 30, "contract", "ops")
        await _stored_and_signed(store, PER_BATCH + 1, worker)

        with caplog.at_level(logging.ERROR, logger="agentaudit.retention.periodic"):
            gate.open()
            await _swept(gate, 2, worker)
        (failed,) = [r for r in caplog.records if r.name == "agentaudit.retention.periodic"]
        assert failed.levelno == logging.ERROR and "retention sweep failed" in failed.getMessage()
        assert failed.exc_info is not None and "clock fault" in str(failed.exc_info[1])
        assert (
            scalar(store, "SELECT count() FROM agentaudit.retention_log WHERE kind = 'applied'")
            == 0
        )

        await produce_raw(settings, _batch())  # the sink goes on after a failed sweep
        await _stored_and_signed(store, 2 * PER_BATCH + 1, worker)
        gate.open()
        await _swept(gate, 3, worker)
        horizon = int(
            scalar(
                store, "SELECT max(horizon) FROM agentaudit.retention_log WHERE kind = 'applied'"
            )
        )
        assert 0 < horizon < 2 * PER_BATCH + 1
        first = scalar(
            store, f"SELECT min(chain_seq) FROM agentaudit.events WHERE tenant_id = '{TENANT}'"
        )
        assert first == horizon + 1
        await _stored_and_signed(store, 2 * PER_BATCH + 2 - horizon, worker)  # + retention_applied

    stop.set()  # while the sweeper waits at the gate: no sweep runs after this
    await asyncio.wait_for(worker, 60)
    assert gate.waits == 3
    with open_store(settings) as store:
        reports = verify_store(settings, store, public_keys(settings))
    text, ok = summary(reports)
    assert ok, "\n".join(ln.render() for r in reports for ln in r.lines)
    assert f"{horizon} rows {EXPIRED}" in text
