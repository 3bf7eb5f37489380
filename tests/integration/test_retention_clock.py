"""A retention sweep deletes only when two clocks agree (`agentaudit.retention.clock`, the
sweep's `_first_young`), on a real chDB trail built exactly as the sink stores it.

30 rows of one chain, a checkpoint every 10, every row occurred at `OCCURRED_AT`; the tenant
keeps 30 days. The signer's clock ran 40 days behind: its checkpoints say they were signed 40
days before the rows occurred.
- An hour after `OCCURRED_AT` nothing is cut: the agents' clocks say the rows are an hour old.
  Before, rows #1-#20 were deleted (their checkpoints looked 40 days old).
- With a host clock 400 days ahead of the rows, the sweep cuts as of the trail's time:
  nothing. Before, everything below the newest checkpoint.
- 31 days after `OCCURRED_AT`, the clock vouched for: #1-#20 go.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from agentaudit.bench.trail_measure import OCCURRED_AT, build_signed_store
from agentaudit.broker import ensure_topics
from agentaudit.keyring import init_keys
from agentaudit.retention.policy import set_retention
from agentaudit.retention.sweep import sweep, sweep_report
from agentaudit.settings import Settings
from agentaudit.store import open_store
from agentaudit.store.migrations import migrate
from agentaudit.verify.run import public_keys
from tests.integration.helpers import scalar

pytestmark = pytest.mark.integration


def test_a_cut_needs_the_host_the_signer_and_the_agents_clocks_to_agree(
    settings: Settings,
) -> None:
    settings = settings.model_copy(update={"key_dir": settings.data_dir / "keys"})
    init_keys(settings.key_dir, clock=lambda: OCCURRED_AT - timedelta(days=50))
    asyncio.run(ensure_topics(settings))
    with open_store(settings, own=True) as store:
        migrate(store)
        behind = OCCURRED_AT - timedelta(days=40)
        build_signed_store(settings, store, 30, 1, every=10, signed_at=lambda: behind)
        set_retention(settings, store, "bench-0", 30, "contract", "ops")
        keys = public_keys(settings)

        def first() -> int:
            return int(scalar(store, "SELECT min(chain_seq) FROM agentaudit.events"))

        hour_later = OCCURRED_AT + timedelta(hours=1)
        report = sweep_report(settings, store, keys, now=lambda: hour_later)
        assert report.cuts == [] and report.clock_refused == ""
        (kept,) = report.kept
        assert kept.reason == "#1 occurred less than 30 days ago by the agents' clocks"
        assert first() == 1

        jumped = OCCURRED_AT + timedelta(days=400)
        report = sweep_report(settings, store, keys, now=lambda: jumped)
        assert report.cuts == []
        assert "is 400 days 0 h ahead of the trail's newest events" in report.clock_refused
        assert first() == 1

        month_later = OCCURRED_AT + timedelta(days=31)
        cuts = sweep(settings, store, keys, now=lambda: month_later, trust_clock=True)
        assert [(c.partition, c.horizon) for c in cuts] == [(0, 20)]
        assert first() == 21
