"""`agentaudit retention set|show|apply` and `agentaudit hold add|rm` on a real sink and chDB.

The commands run through typer's CliRunner in this process while the test owns the store
(as when a worker runs: the CLI reaches the store through its owner's HTTP endpoint). Two
tenants: `rc-a` keeps 30 days, `rc-b` keeps 30 days under a tenant hold. The sink signs its
first checkpoints with a clock 40 days back (its injected signing clock), then the real one,
so `apply` on the real clock cuts `rc-a` up to the last old checkpoint and keeps `rc-b`.
One subprocess run checks the real exit code when the broker cannot record a change.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from typer.testing import CliRunner

from agentaudit.broker import ensure_topics, free_port
from agentaudit.cli.main import app
from agentaudit.errors import UserError
from agentaudit.keyring import init_keys
from agentaudit.retention.policy import set_hold
from agentaudit.settings import Settings
from agentaudit.store import open_store
from agentaudit.store.migrations import migrate
from agentaudit.store.protocol import Store
from agentaudit.trail.verdicts import EXPIRED, summary
from agentaudit.verify.run import public_keys, verify_store
from agentaudit_sdk.clock import utc_now
from tests.conftest import settings_env
from tests.factories import event_dict, wire
from tests.integration.helpers import produce_raw, scalar
from tests.integration.helpers_trail import RunningSink, running_sink

pytestmark = pytest.mark.integration

TENANTS = ("rc-a", "rc-b")
PER_BATCH = 20


def _batch(age: timedelta = timedelta(0)) -> list[tuple[bytes, bytes]]:
    """`PER_BATCH` events per tenant that occurred `age` ago."""
    out = []
    for _ in range(PER_BATCH):
        for t in TENANTS:
            doc = event_dict(tenant=t)
            doc["occurred_at"] = (utc_now() - age).isoformat()
            out.append((t.encode(), wire(doc)))
    return out


def _code(result: Result) -> int:
    """The exit code `agentaudit.cli.main.main` gives: a UserError's own, else click's."""
    if isinstance(result.exception, UserError):
        return result.exception.exit_code
    return result.exit_code


async def _cli(settings: Settings, *args: str) -> Result:
    # A thread: the commands publish with asyncio.run, which cannot nest in this loop.
    return await asyncio.to_thread(CliRunner().invoke, app, list(args), env=settings.to_env())


def _ok(result: Result) -> str:
    assert _code(result) == 0, (result.output, result.exception)
    return result.output


def _json(result: Result) -> list[dict[str, Any]]:
    return [json.loads(line) for line in _ok(result).splitlines() if line.strip()]


async def _two_batches_signed_40_days_ago(
    settings: Settings, sink: RunningSink, age: timedelta = timedelta(days=40)
) -> None:
    """Two batches for every tenant that occurred `age` ago, each checkpointed by a trail clock
    40 days behind (old checkpoints first, as a retention cut needs), then the real clock
    again. The events' own age is the agents' clocks: a cut needs both to agree."""
    trail = sink.worker.trail
    assert trail is not None
    trail.clock = lambda: utc_now() - timedelta(days=40)
    for b in range(2):
        await produce_raw(settings, _batch(age))
        await sink.wait(accepted=(b + 1) * PER_BATCH * len(TENANTS))
        await sink.wait(signed=sink.signed + 2 * len(TENANTS))
    trail.clock = utc_now


async def test_retention_and_hold_commands_record_show_and_apply(
    settings: Settings, tmp_path: Path
) -> None:
    # A key made 50 days ago, so checkpoints signed 40 days ago are within its use.
    init_keys(tmp_path / "keys", clock=lambda: utc_now() - timedelta(days=50))
    settings = settings.model_copy(
        update={"checkpoint_interval_s": 0.2, "key_dir": tmp_path / "keys"}
    )
    await ensure_topics(settings)
    with open_store(settings, own=True) as store:
        migrate(store)
        async with running_sink(settings, store) as sink:
            await _two_batches_signed_40_days_ago(settings, sink)

            _ok(
                await _cli(
                    settings,
                    "retention",
                    "set",
                    "--tenant",
                    "rc-a",
                    "--days",
                    "30",
                    "--reason",
                    "contract",
                    "--by",
                    "ops",
                )
            )
            _ok(
                await _cli(
                    settings,
                    "retention",
                    "set",
                    "--tenant",
                    "rc-b",
                    "--days",
                    "30",
                    "--reason",
                    "contract",
                )
            )
            out = _ok(await _cli(settings, "hold", "add", "--tenant", "rc-b", "--reason", "case 9"))
            assert "legal hold placed on tenant rc-b" in out
            _ok(
                await _cli(
                    settings,
                    "hold",
                    "add",
                    "--tenant",
                    "rc-a",
                    "--subject",
                    "ghost",
                    "--reason",
                    "case 10",
                )
            )
            out = _ok(
                await _cli(
                    settings,
                    "hold",
                    "rm",
                    "--tenant",
                    "rc-a",
                    "--subject",
                    "ghost",
                    "--reason",
                    "closed",
                )
            )
            assert "lifted from subject ghost of rc-a" in out and "held subjects" not in out
            again = await _cli(
                settings,
                "hold",
                "rm",
                "--tenant",
                "rc-a",
                "--subject",
                "ghost",
                "--reason",
                "again",
            )
            assert _code(again) == 2 and "no hold on subject ghost" in str(again.exception)
            neither = await _cli(settings, "retention", "set", "--tenant", "rc-a", "--reason", "r")
            assert _code(neither) == 2 and "exactly one of --days N and --forever" in str(
                neither.exception
            )
            zero = await _cli(
                settings, "retention", "set", "--tenant", "rc-a", "--days", "0", "--reason", "r"
            )
            assert _code(zero) == 2
            blank = await _cli(
                settings, "retention", "set", "--tenant", "rc-a", "--forever", "--reason", ""
            )
            assert _code(blank) == 2 and str(blank.exception).startswith("--reason: ")

            changes = 2 * PER_BATCH * len(TENANTS) + 5  # 2 retention, 3 hold events
            await sink.wait(accepted=changes)
            await sink.wait(signed=sink.signed + 2 * len(TENANTS))
            part_a = int(
                scalar(
                    store,
                    "SELECT any(kafka_partition) FROM agentaudit.events WHERE tenant_id = 'rc-a'",
                )
            )

            applied = _json(
                await _cli(settings, "retention", "apply", "--trust-clock", "-f", "json")
            )
            assert applied == [
                {
                    "tenant": "rc-a",
                    "partition": part_a,
                    "outcome": "cut",
                    "rows": "#1-#40 deleted",
                    "reason": "retention 30 days: up to a checkpoint signed that long ago",
                },
                {
                    "tenant": "rc-b",
                    "partition": None,
                    "outcome": "kept",
                    "rows": "all kept",
                    "reason": "legal hold on the tenant",
                },
            ]
            await sink.wait(accepted=changes + 1)  # the retention_applied event
            await sink.wait(signed=sink.signed + 2 * len(TENANTS))

            (again_a, again_b) = _json(
                await _cli(settings, "retention", "apply", "--trust-clock", "-f", "json")
            )
            assert again_a["outcome"] == "kept" and again_a["rows"] == "kept from #41"
            # the first row left is a policy change's event, made now
            assert again_a["reason"] == "#41 occurred less than 30 days ago by the agents' clocks"
            assert again_b["reason"] == "legal hold on the tenant"

            shown = _json(await _cli(settings, "retention", "show", "-f", "json"))
            assert [
                (
                    r["tenant"],
                    r["retention"],
                    r["tenant_hold"],
                    r["held_subjects"],
                    r["partition"],
                    r["horizon"],
                )
                for r in shown
            ] == [
                ("rc-a", "30 days", False, "", part_a, 40),
                ("rc-b", "30 days", True, "", None, None),
            ]
            (nobody,) = _json(
                await _cli(settings, "retention", "show", "--tenant", "x", "-f", "json")
            )
            assert nobody["retention"] == "forever" and nobody["changed_at"] is None
            table = _ok(await _cli(settings, "retention", "show"))
            assert "rc-a" in table and "30 days" in table

        assert (
            scalar(store, "SELECT min(chain_seq) FROM agentaudit.events WHERE tenant_id = 'rc-a'")
            == 41
        )
        assert (
            scalar(store, "SELECT min(chain_seq) FROM agentaudit.events WHERE tenant_id = 'rc-b'")
            == 1
        )
        log = store.query(
            "SELECT tenant_id, kind, subject, active, actor FROM agentaudit.retention_log "
            "ORDER BY changed_at"
        ).result_rows
        assert [r[:4] for r in log] == [
            ("rc-a", "retention", "", False),
            ("rc-b", "retention", "", False),
            ("rc-b", "hold", "", True),
            ("rc-a", "hold", "ghost", True),
            ("rc-a", "hold", "ghost", False),
            ("rc-a", "applied", "", False),
        ]
        assert log[0][4] == "ops"
        reports = verify_store(settings, store, public_keys(settings))
        text, ok = summary(reports)
        assert ok, "\n".join(ln.render() for r in reports for ln in r.lines)
        assert f"40 rows {EXPIRED}" in text


def test_a_change_the_broker_cannot_record_is_not_made(settings: Settings) -> None:
    with open_store(settings) as store:
        migrate(store)
    down = {**settings_env(settings), "AGENTAUDIT_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}"}
    for args in (
        ["retention", "set", "--tenant", "t", "--days", "7", "--reason", "contract"],
        ["hold", "add", "--tenant", "t", "--reason", "case 1"],
    ):
        ran = subprocess.run(
            [".venv/bin/agentaudit", *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
            env=down,
        )
        assert ran.returncode == 3, (ran.stdout, ran.stderr)
        lines = ran.stderr.strip().splitlines()
        assert len(lines) == 1 and "cannot reach Kafka" in lines[0], lines
    with open_store(settings) as store:
        assert scalar(store, "SELECT count() FROM agentaudit.retention_log") == 0
        _changes_take_force_in_the_order_made(settings, store)


def _changes_take_force_in_the_order_made(settings: Settings, store: Store) -> None:
    """Before, `changed_at` was the writer's clock and the newest by it won: a hold placed
    again from a host 30 min behind the one that lifted it was recorded but not in force.
    (Here, not in a test of its own: that would cost a store's 5 s set-up.)"""
    asyncio.run(ensure_topics(settings))
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    for placed, minutes in ((True, 0), (False, 60), (True, 30)):  # the last from a clock behind
        policy = set_hold(
            settings,
            store,
            "acme",
            None,
            placed,
            "case 7",
            "ops",
            now=lambda m=minutes: t0 + timedelta(minutes=m),
        )
        assert policy.tenant_hold is placed


async def test_no_cut_at_a_checkpoint_verify_would_reject(
    settings: Settings, tmp_path: Path
) -> None:
    # The key is made now, the first checkpoints say they were signed 40 days ago: outside the
    # key's use, so verify calls them INVALID. A cut there would leave rows verify reports
    # missing; the sweep keeps the chain instead.
    init_keys(tmp_path / "keys")
    settings = settings.model_copy(
        update={"checkpoint_interval_s": 0.2, "key_dir": tmp_path / "keys"}
    )
    await ensure_topics(settings)
    with open_store(settings, own=True) as store:
        migrate(store)
        async with running_sink(settings, store) as sink:
            await _two_batches_signed_40_days_ago(settings, sink)
            _ok(
                await _cli(
                    settings,
                    "retention",
                    "set",
                    "--tenant",
                    "rc-a",
                    "--days",
                    "30",
                    "--reason",
                    "contract",
                )
            )
            await sink.wait(accepted=2 * PER_BATCH * len(TENANTS) + 1)
            await sink.wait(signed=sink.signed + 2 * len(TENANTS))
            (kept,) = _json(
                await _cli(settings, "retention", "apply", "--trust-clock", "-f", "json")
            )
        assert kept["outcome"] == "kept" and kept["rows"] == "all kept", kept
        assert kept["reason"].startswith("no checkpoint below #41 signed 30 days ago yet")
        assert (
            scalar(store, "SELECT min(chain_seq) FROM agentaudit.events WHERE tenant_id = 'rc-a'")
            == 1
        )
