"""Retention and legal hold on a real store written by the real sink (issue 11 D).

Three tenants on a signing sink: `rt-a` keeps 30 days, `rt-b` keeps everything (the default),
`rt-c` keeps 30 days with a legal hold on one subject whose rows start in the second batch.
The sweep runs on an injected clock 31 days after the checkpoints were signed (the test lifts
`max_clock_skew_s` so the sink accepts that event's later `occurred_at`). Then: every change is
in the trail and in `retention_log`; each chain lost exactly a prefix ending at a checkpoint
(for rt-c, before the held subject's first row); `verify` passes with `expired by policy`
lines; and an attacker's deletions (past the horizon, or a prefix of a tenant without
retention) are still `missing rows`; the export of a cut chain verifies.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agentaudit.broker import ensure_topics
from agentaudit.keyring import PUBLIC_KEYS_FILE
from agentaudit.retention.policy import policies, set_hold, set_retention
from agentaudit.retention.sweep import sweep, sweep_report
from agentaudit.settings import Settings
from agentaudit.store import open_store
from agentaudit.store.migrations import migrate
from agentaudit.store.protocol import Store
from agentaudit.trail.bundle import verify_bundle
from agentaudit.trail.verdicts import EXPIRED, MISSING, ChainReport, summary
from agentaudit.verify.run import export_bundle, public_keys, verify_store
from tests.factories import event_dict, wire
from tests.integration.helpers import produce_raw, scalar
from tests.integration.helpers_trail import running_sink

pytestmark = pytest.mark.integration

TENANTS = ("rt-a", "rt-b", "rt-c")
PER_BATCH = 20  # events per tenant per batch
HELD = "user-held"


def _batch(b: int) -> list[tuple[bytes, bytes]]:
    out = []
    for i in range(PER_BATCH):
        for t in TENANTS:
            doc = event_dict(tenant=t, kind="tool_call")
            doc["user_id"] = HELD if (t == "rt-c" and b == 1 and i >= 5) else f"user-{i % 3}"
            out.append((t.encode(), wire(doc)))
    return out


def _lines(reports: list[ChainReport]) -> list[tuple[str, str, str]]:
    return [(r.origin.split("/")[-2], ln.verdict, ln.detail) for r in reports for ln in r.lines]


def _first_seq(store: Store, t: str) -> int:
    return int(
        scalar(store, f"SELECT min(chain_seq) FROM agentaudit.events WHERE tenant_id = '{t}'")
    )


async def test_retention_cuts_prefixes_verify_reports_expired_and_still_catches_deletions(
    settings: Settings, tmp_path: Path
) -> None:
    settings = settings.model_copy(update={"checkpoint_interval_s": 0.2, "max_clock_skew_s": 1e9})
    keys = public_keys(settings)
    later = datetime.now(UTC) + timedelta(days=31)  # the sweep's injected clock
    await ensure_topics(settings)
    with open_store(settings, own=True) as store:
        migrate(store)
        async with running_sink(settings, store) as sink:
            for b in range(3):  # each batch covered by checkpoints before the next
                await produce_raw(settings, _batch(b))
                await sink.wait(accepted=(b + 1) * PER_BATCH * 3)
                await sink.wait(signed=sink.signed + 2 * len(TENANTS))
            # Policy changes: published first (the running sink stores them), then the table.
            for t in ("rt-a", "rt-c"):
                await asyncio.to_thread(set_retention, settings, store, t, 30, "contract", "ops")
            await asyncio.to_thread(set_hold, settings, store, "rt-c", HELD, True, "case 7", "ops")
            await sink.wait(accepted=3 * PER_BATCH * 3 + 3)
            await sink.wait(signed=sink.signed + 2 * len(TENANTS))
            held_first = int(
                scalar(
                    store,
                    "SELECT min(chain_seq) FROM agentaudit.events "
                    f"WHERE tenant_id = 'rt-c' AND user_id = '{HELD}'",
                )
            )
            # The clock 31 days ahead of every event: not trusted (a clock that jumped), so
            # nothing is cut; then an operator vouches for it (time did pass).
            jumped = await asyncio.to_thread(sweep_report, settings, store, keys, now=lambda: later)
            assert (
                jumped.cuts == [] and "ahead of the trail's newest events" in jumped.clock_refused
            )
            assert _first_seq(store, "rt-a") == 1
            cuts = await asyncio.to_thread(
                sweep, settings, store, keys, now=lambda: later, trust_clock=True
            )
            await sink.wait(accepted=3 * PER_BATCH * 3 + 3 + len(cuts))
            await sink.wait(signed=sink.signed + 2 * len(TENANTS))

        by_tenant = {c.tenant_id: c for c in cuts}
        assert sorted(by_tenant) == ["rt-a", "rt-c"]  # rt-b keeps everything
        assert 0 < by_tenant["rt-c"].horizon < held_first  # the hold stops the horizon
        assert by_tenant["rt-c"].floor == held_first
        for t, c in by_tenant.items():
            assert _first_seq(store, t) == c.horizon + 1  # exactly a prefix is gone
        assert _first_seq(store, "rt-b") == 1

        # Recorded twice: in the trail (signed with everything else) and in the table.
        kinds = store.query(
            "SELECT tenant_id, type FROM agentaudit.events WHERE agent_id = "
            "'agentaudit' ORDER BY tenant_id, type"
        ).result_rows
        assert kinds == [
            ("rt-a", "retention_applied"),
            ("rt-a", "retention_changed"),
            ("rt-c", "legal_hold_changed"),
            ("rt-c", "retention_applied"),
            ("rt-c", "retention_changed"),
        ]
        table = store.query(
            "SELECT tenant_id, kind, count() FROM agentaudit.retention_log "
            "GROUP BY tenant_id, kind ORDER BY tenant_id, kind"
        ).result_rows
        assert table == [
            ("rt-a", "applied", 1),
            ("rt-a", "retention", 1),
            ("rt-c", "applied", 1),
            ("rt-c", "hold", 1),
            ("rt-c", "retention", 1),
        ]
        assert policies(store)["rt-c"].held_subjects == [HELD]

        reports = verify_store(settings, store, keys)
        text, ok = summary(reports)
        assert ok, "\n".join(ln.render() for r in reports for ln in r.lines)
        expired = {(t, d.split(";")[0]) for t, v, d in _lines(reports) if v == EXPIRED}
        assert {t for t, _ in expired} == {"rt-a", "rt-c"}
        assert sum(r.expired for r in reports) == sum(c.horizon for c in cuts)
        assert f"{sum(c.horizon for c in cuts)} rows {EXPIRED}" in text

        # The export of a cut chain starts at the horizon's frontier and verifies.
        out = tmp_path / "export"
        export_bundle(settings, store, settings.key_dir / PUBLIC_KEYS_FILE, out, "rt-a")
        assert summary(verify_bundle(out))[1]

        # An attacker: the row after rt-a's horizon, and a prefix of rt-b (no retention).
        a = by_tenant["rt-a"].horizon
        store.command(
            f"ALTER TABLE agentaudit.events DELETE WHERE tenant_id = 'rt-a' AND "
            f"chain_seq <= {a + 1} SETTINGS mutations_sync = 2"
        )
        store.command(
            "ALTER TABLE agentaudit.events DELETE WHERE tenant_id = 'rt-b' AND "
            "chain_seq <= 20 SETTINGS mutations_sync = 2"
        )
        reports = verify_store(settings, store, keys)
        lines = _lines(reports)
        assert not summary(reports)[1]
        assert any(t == "rt-a" and v == MISSING for t, v, d in lines), lines
        rt_a = next(r for r in reports if "/rt-a/" in r.origin)
        assert rt_a.expired == a  # nothing past the horizon is excused
        assert any(t == "rt-b" and v == MISSING for t, v, d in lines)
        assert not any(t == "rt-b" and v == EXPIRED for t, v, d in lines)
