"""`agentaudit verify` and `export` on a real store: real broker, chDB, sink signing (issue 10).

A clean trail verifies; a few mutations made the way a store owner would (ALTER … UPDATE /
DELETE) are reported with the right verdict; the export bundle verifies with a bare Python that
can import nothing but `cryptography` (and fails after an edit to one exported row).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import cryptography
import pytest

from agentaudit.broker import ensure_topics
from agentaudit.keyring import PUBLIC_KEYS_FILE
from agentaudit.settings import Settings
from agentaudit.store import open_store
from agentaudit.store.migrations import migrate
from agentaudit.store.protocol import Store
from agentaudit.trail.verdicts import ChainReport, summary
from agentaudit.verify.run import export_bundle, public_keys, verify_store
from tests.factories import event_dict, wire
from tests.integration.helpers import produce_raw, sink_until

pytestmark = pytest.mark.integration

TENANTS = ("vf-a", "vf-b")
N = 120


async def _signed_store(settings: Settings, store: Store) -> None:
    await ensure_topics(settings)
    migrate(store)
    events = [
        (TENANTS[i % 2].encode(), wire(event_dict(tenant=TENANTS[i % 2], kind="llm_call")))
        for i in range(N)
    ]
    await produce_raw(settings, events)
    await sink_until(settings, store, lambda w: w.processor.counters.accepted >= N)


def _verify(settings: Settings, store: Store, **kw: object) -> list[ChainReport]:
    return verify_store(settings, store, public_keys(settings), **kw)  # type: ignore[arg-type]


def _lines(reports: list[ChainReport]) -> list[str]:
    return [line.render() for r in reports for line in r.lines]


def _mutate(store: Store, sql: str) -> None:
    store.command(sql + " SETTINGS mutations_sync = 2")


async def test_clean_store_verifies_then_mutations_get_their_verdicts(settings: Settings) -> None:
    settings = settings.model_copy(update={"checkpoint_interval_s": 0.2})
    with open_store(settings, own=True) as store:
        await _signed_store(settings, store)
        reports = _verify(settings, store)
        _, ok = summary(reports)
        assert ok, "\n".join(_lines(reports))
        assert sum(r.rows_valid for r in reports) == N and sum(r.pending for r in reports) == 0
        assert all(r.checkpoints_valid == r.checkpoints > 0 for r in reports)

        t = TENANTS[0]
        chain = f"tenant_id = '{t}'"
        seq_of = store.query(
            f"SELECT kafka_partition, max(chain_seq) FROM agentaudit.events "
            f"WHERE {chain} GROUP BY kafka_partition"
        ).result_rows
        part, last = int(seq_of[0][0]), int(seq_of[0][1])
        where = f"{chain} AND kafka_partition = {part}"
        _mutate(
            store,
            f"ALTER TABLE agentaudit.events UPDATE user_id = 'mallory' "
            f"WHERE {where} AND chain_seq = 2",
        )
        _mutate(
            store,
            f"ALTER TABLE agentaudit.events UPDATE cost_usd = 0 WHERE {where} AND chain_seq = 4",
        )
        _mutate(
            store, f"ALTER TABLE agentaudit.events DELETE WHERE {where} AND chain_seq > {last - 3}"
        )
        lines = "\n".join(_lines(_verify(settings, store, tenant=t)))
        assert "\tderived value disagrees: user_id (seq 2)" in lines, lines
        assert "\tderived value disagrees: cost_usd (seq 4)" in lines, lines
        assert "\tINVALID: row hash (seq 4)" in lines, lines
        assert f"\tmissing rows (seq {last - 2}-{last})" in lines, lines
        _, ok = summary(_verify(settings, store, tenant=TENANTS[1]))
        assert ok, "the other tenant's chains are untouched"


def _link_bare_site(d: Path) -> None:
    """Fill `d` with only `cryptography` and what it imports (cffi), by symlinks."""
    site = Path(cryptography.__file__).parent.parent
    for p in site.iterdir():
        if p.name.split("-")[0].split(".")[0] in {
            "cryptography",
            "cffi",
            "_cffi_backend",
            "pycparser",
        }:
            (d / p.name).symlink_to(p)


def _run_bundle(out: Path) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="bare-site-") as tmp:
        bare = Path(tmp)
        _link_bare_site(bare)
        return _run_python_on(bare, out)


def _run_python_on(bare: Path, out: Path) -> subprocess.CompletedProcess[str]:
    # -I: no PYTHON* variables, no user site, no cwd on the path; -S: no site-packages at all.
    # The path holds cryptography only, so importing anything of ours would fail.
    code = (
        f"import sys, runpy; sys.path.insert(0, {str(bare)!r}); "
        f"sys.argv = [{str(out / 'verify.py')!r}]; "
        f"runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    python = getattr(sys, "_base_executable", sys.executable)
    env = {"PATH": os.environ.get("PATH", "")}
    return subprocess.run(
        [python, "-I", "-S", "-c", code],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=120,
        cwd=tempfile.gettempdir(),
    )


async def test_export_bundle_verifies_with_bare_python_and_catches_an_edit(
    settings: Settings, tmp_path: Path
) -> None:
    settings = settings.model_copy(update={"checkpoint_interval_s": 0.2})
    with open_store(settings, own=True) as store:
        await _signed_store(settings, store)
        out = tmp_path / "bundle"
        keys = settings.key_dir / PUBLIC_KEYS_FILE
        manifest = export_bundle(settings, store, keys, out, TENANTS[0])
    assert manifest["chains"]
    done = _run_bundle(out)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "checkpoints valid" in done.stdout and "INVALID" not in done.stdout
    assert f"{N // 2}/{N // 2} rows valid" in done.stdout
    # One exported payload edited: the auditor's verifier says so and exits 1.
    rows = out / manifest["chains"][0]["rows"]
    lines = rows.read_text().splitlines()
    row = json.loads(lines[0])
    row["payload"] = row["payload"].replace(TENANTS[0], "vf-z")
    rows.write_text("\n".join([json.dumps(row), *lines[1:]]) + "\n")
    bad = _run_bundle(out)
    assert bad.returncode == 1 and "INVALID: row hash" in bad.stdout, bad.stdout + bad.stderr
