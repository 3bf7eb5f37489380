"""The CLI starts without the heavy modules only some commands need (scipy for the stream jobs,
the store client): every command, even `--help`, paid ~3 s for them."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("scipy", "clickhouse_connect", "faust", "chdb")


def imported_after(statements: str) -> list[str]:
    """Which of `HEAVY` a fresh interpreter holds after running `statements`."""
    code = (
        f"import json, sys; {statements}; "
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return list(json.loads(out.stdout))


def test_the_cli_imports_no_scipy_store_client_or_faust_at_start() -> None:
    assert imported_after("import agentaudit.cli.main") == []


def test_the_goldsets_commands_do_not_import_scipy() -> None:
    # `agentaudit goldsets …` took 3.4 s per call, 1.8 s of it importing scipy through the
    # drift monitor it never uses; the drift package now loads its monitor on first use.
    assert "scipy" not in imported_after(
        "import agentaudit.cli.goldsets, agentaudit.goldsets_plane"
    )
    assert "scipy" in imported_after("import stream_jobs.drift as d; d.DriftMonitor")
