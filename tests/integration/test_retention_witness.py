"""The trail's clock that a retention sweep checks the host's against is the agents' clocks,
never the pipeline's own events: they are stamped by the host clock being checked.

30 rows of one chain occurred at `OCCURRED_AT`, checkpoints signed then; the tenant keeps 30
days. The host clock then jumps 60 days ahead, and while it is there an auditor runs queries
over several tenants: each statement is an `auditor_query` event per tenant, dated by that
clock (here 40 of them, in another tenant). Before, those events were most of the newest ones,
the witness was the jumped clock, and the sweep deleted #1-#20 two months early; now it cuts
as of the agents' time: nothing.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from agentaudit.bench.trail_measure import OCCURRED_AT, build_signed_store
from agentaudit.keyring import init_keys
from agentaudit.retention.clock import trail_witness
from agentaudit.retention.policy import set_retention
from agentaudit.retention.sweep import sweep_report
from agentaudit.settings import Settings
from agentaudit.store import open_store
from agentaudit.store.migrations import migrate
from agentaudit.verify.run import public_keys
from tests.integration.helpers import scalar

pytestmark = pytest.mark.integration


def test_the_pipelines_own_events_are_no_witness_for_the_host_clock(settings: Settings) -> None:
    settings = settings.model_copy(update={"key_dir": settings.data_dir / "keys"})
    init_keys(settings.key_dir, clock=lambda: OCCURRED_AT - timedelta(days=50))
    jumped = OCCURRED_AT + timedelta(days=60)
    with open_store(settings, own=True) as store:
        migrate(store)
        build_signed_store(settings, store, 30, 1, every=10, signed_at=lambda: OCCURRED_AT)
        set_retention(settings, store, "bench-0", 30, "contract", "ops", now=lambda: OCCURRED_AT)
        store.command(
            "INSERT INTO agentaudit.events (tenant_id, agent_id, type, occurred_at, ingested_at) "
            "SELECT 'other', 'agentaudit', 'auditor_query', {at:DateTime64(6, 'UTC')}, "
            "now64(6, 'UTC') FROM numbers(40)",
            {"at": jumped},
        )
        assert trail_witness(store) == OCCURRED_AT
        report = sweep_report(
            settings,
            store,
            public_keys(settings),
            now=lambda: jumped,
            publish_=lambda _s, _e: None,
        )
        assert report.cuts == [], report
        assert "ahead of the trail's newest events" in report.clock_refused
        assert (
            int(
                scalar(
                    store,
                    "SELECT min(chain_seq) FROM agentaudit.events WHERE tenant_id = 'bench-0'",
                )
            )
            == 1
        )
