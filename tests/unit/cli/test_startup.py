"""The CLI starts without the heavy modules only some commands need (scipy for gold sets and
the stream jobs, the store client): every command, even `--help`, paid ~3 s for them."""

from __future__ import annotations

import subprocess
import sys


def test_the_cli_imports_no_scipy_store_client_or_faust_at_start() -> None:
    code = (
        "import sys, agentaudit.cli.main; "
        "print(sorted(m for m in ('scipy', 'clickhouse_connect', 'faust', 'chdb') if m in "
        "sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
