"""The signed store the mutation corpus (test_trail_mutations.py) copies: built once per module.

A real broker and a real SinkWorker signing every 0.2 s; three tenants (one chain each); two
phases, each a sink run over batches produced one after another, each batch covered by a
signed checkpoint before the next (checkpoints of several sizes), stopped cleanly (a handoff
checkpoint); a copy of the store taken between the phases (the earlier copy a rolled-back store
is restored from). The anchor directory is kept apart from the data dir so a test can pair any
store copy with the later anchors.
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass
from pathlib import Path

from agentaudit.broker import LocalBroker, ensure_topics
from agentaudit.settings import Settings
from agentaudit.store import open_store
from agentaudit.store.migrations import migrate
from agentaudit.store.protocol import Store
from agentaudit.trail.checkpoint import origin_for
from tests.conftest import isolated_settings
from tests.factories import event_dict, wire
from tests.integration.helpers import produce_raw
from tests.integration.helpers_trail import running_sink

TENANTS = ("mut-a", "mut-b", "mut-c")
BATCH = 120  # events per batch, spread evenly over the tenants
PHASE1, PHASE2 = 3, 2  # batches before and after the early copy of the store
CHAIN_ROWS = BATCH * (PHASE1 + PHASE2) // len(TENANTS)
Chain = tuple[str, int]


@dataclass(frozen=True)
class Trail:
    """The module's signed store: its settings, the early copy, its chains (first tenant first)."""

    settings: Settings
    early: Path  # data dir copied after phase 1
    chains: tuple[Chain, ...]

    def origin(self, chain: Chain) -> str:
        return origin_for(self.settings.deployment, *chain)


def _events(first: int, n: int) -> list[tuple[bytes, bytes]]:
    out = []
    for i in range(first, first + n):
        tenant = TENANTS[i % len(TENANTS)]
        doc = event_dict(tenant=tenant, kind="llm_call" if (i // len(TENANTS)) % 2 else "tool_call")
        doc["user_id"] = f"user-{i % 7}"
        out.append((tenant.encode(), wire(doc)))
    return out


async def _sink_batches(settings: Settings, store: Store, first: int, batches: int) -> None:
    """One sink over `batches` batches produced one after another, each accepted and then
    covered by a signed checkpoint of every chain before the next (so the chains have
    checkpoints of several sizes); stopped cleanly (a handoff checkpoint)."""
    async with running_sink(settings, store) as sink:
        for b in range(batches):
            await produce_raw(settings, _events(first + b * BATCH, BATCH))
            await sink.wait(accepted=(b + 1) * BATCH)
            # Two more signing rounds: the second began after every row was stored.
            await sink.wait(signed=sink.signed + 2 * len(TENANTS))


def build_trail(broker: LocalBroker, base: Path) -> Trail:
    """Sink PHASE1 batches, copy the store (`early`), sink PHASE2 more; all in `base`."""
    settings = isolated_settings(
        broker.bootstrap, base, checkpoint_dir=base / "anchors", checkpoint_interval_s=0.2
    )

    async def build() -> tuple[Chain, ...]:
        await ensure_topics(settings)
        with open_store(settings, own=True) as store:
            migrate(store)
            await _sink_batches(settings, store, 0, PHASE1)
        shutil.copytree(settings.data_dir, base / "early", symlinks=True)
        with open_store(settings, own=True) as store:
            await _sink_batches(settings, store, PHASE1 * BATCH, PHASE2)
            rows = store.query(
                "SELECT tenant_id, kafka_partition, count(), max(chain_seq) FROM agentaudit.events "
                "GROUP BY tenant_id, kafka_partition ORDER BY tenant_id"
            ).result_rows
        assert [(r[0], r[2], r[3]) for r in rows] == [(t, CHAIN_ROWS, CHAIN_ROWS) for t in TENANTS]
        return tuple((r[0], int(r[1])) for r in rows)

    return Trail(settings, base / "early", asyncio.run(build()))


def copy_trail(trail: Trail, data: Path, tmp_path: Path) -> Settings:
    """Settings of a copy in `tmp_path` of the store `data` and of the anchor directory."""
    # chDB's metadata and data directories are relative symlinks into store/: kept as links.
    shutil.copytree(data, tmp_path / "data", symlinks=True)
    shutil.copytree(trail.settings.checkpoints_dir, tmp_path / "anchors")
    return trail.settings.model_copy(
        update={"data_dir": tmp_path / "data", "checkpoint_dir": tmp_path / "anchors"}
    )
