"""A retention sweep killed half-way leaves nothing a rerun cannot account for; a legal hold
placed while a sweep runs stops its deletes."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agentaudit.bench.trail_measure import build_signed_store
from agentaudit.broker import ensure_topics
from agentaudit.keyring import init_keys
from agentaudit.retention.policy import log_rows, set_hold, set_retention
from agentaudit.retention.sweep import last_cuts, sweep
from agentaudit.settings import Settings
from agentaudit.store import open_store
from agentaudit.store.migrations import migrate
from agentaudit.store.protocol import Store
from agentaudit.system_events import publish
from agentaudit.verify.run import public_keys
from tests.integration.helpers import scalar

# marked `faults` and `integration` by tests/faults/conftest.py (a store costs 5 s to set up)


class Killed(BaseException):
    """The process ends here (not an Exception: nothing may catch it)."""


class DiesAfterDelete:
    """The real store, except that the process dies right after its first row delete."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def command(self, sql: str, params: dict[str, Any] | None = None) -> Any:
        done = self._store.command(sql, params)
        if "DELETE" in sql:
            raise Killed
        return done


def test_a_sweep_killed_after_its_delete_is_still_in_the_retention_log(
    settings: Settings,
) -> None:
    """Before, the sweep deleted and then wrote its `retention_log` row: killed between the
    two, the rows were gone with no row naming the cut, and no rerun wrote one (the chain's
    horizon had moved: nothing new to cut, nothing in the log to restate)."""
    settings = settings.model_copy(update={"key_dir": settings.data_dir / "keys"})
    init_keys(settings.key_dir)
    asyncio.run(ensure_topics(settings))
    later = datetime.now(UTC) + timedelta(days=31)  # checkpoints are signed now
    with open_store(settings, own=True) as store:
        migrate(store)
        build_signed_store(settings, store, 30, 1, every=10)  # tenant bench-0, one chain
        set_retention(settings, store, "bench-0", 30, "contract", "ops")
        keys = public_keys(settings)
        with pytest.raises(Killed):
            sweep(
                settings,
                DiesAfterDelete(store),  # type: ignore[arg-type]
                keys,
                now=lambda: later,
                trust_clock=True,
            )
        # the rerun after the restart
        sweep(settings, store, keys, now=lambda: later, trust_clock=True)
        first = int(scalar(store, "SELECT min(chain_seq) FROM agentaudit.events"))
        assert first == 21  # the newest checkpoint below the head (30) is at 20
        cuts = last_cuts(store, "bench-0")
        assert [(p, c.horizon) for (_, p), c in cuts.items()] == [(0, 20)], cuts


def test_a_hold_placed_while_a_sweep_runs_stops_its_deletes(settings: Settings) -> None:
    """Before, the policies read at the sweep's start held for the whole sweep: a hold placed
    by on-call while it ran (here, while it published its event) did not stop the delete."""
    settings = settings.model_copy(update={"key_dir": settings.data_dir / "keys"})
    init_keys(settings.key_dir)
    asyncio.run(ensure_topics(settings))
    later = datetime.now(UTC) + timedelta(days=31)
    with open_store(settings, own=True) as store:
        migrate(store)
        build_signed_store(settings, store, 30, 1, every=10)
        set_retention(settings, store, "bench-0", 30, "contract", "ops")

        def on_call_meanwhile(s: Settings, events: list[dict[str, Any]]) -> None:
            set_hold(s, store, "bench-0", None, True, "litigation", "oncall")
            publish(s, events)

        cuts = sweep(
            settings,
            store,
            public_keys(settings),
            now=lambda: later,
            publish_=on_call_meanwhile,
            trust_clock=True,
        )
        assert cuts == []
        assert int(scalar(store, "SELECT min(chain_seq) FROM agentaudit.events")) == 1
        assert last_cuts(store, "bench-0") == {}


def test_the_last_cut_is_the_deepest_whatever_the_sweeping_clock_said(settings: Settings) -> None:
    """Before, the newest by the sweeper's clock: a deeper cut made by a host whose clock was
    an hour behind the previous sweep's was not the chain's last cut."""
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    with open_store(settings, own=True) as store:
        migrate(store)
        log_rows(
            store,
            [
                {
                    "changed_at": at,
                    "tenant_id": "acme",
                    "kind": "applied",
                    "days": days,
                    "kafka_partition": 0,
                    "horizon": horizon,
                    "actor": "retention",
                    "event_id": str(uuid.uuid4()),
                }
                for at, horizon, days in ((t0, 10, 30), (t0 - timedelta(hours=1), 20, 7))
            ],
        )
        cut = last_cuts(store, "acme")[("acme", 0)]
        assert (cut.horizon, cut.days) == (20, 7)
