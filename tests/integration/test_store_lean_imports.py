"""Processes that reach the embedded store over HTTP (sink processes, the CLI while a worker
runs) load neither chDB nor pandas, numpy or pyarrow: ~1 s of CPU on every start otherwise."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.test_store import OWNER, REPO, spawn, stop

pytestmark = pytest.mark.integration

HEAVY = ("chdb", "pandas", "numpy", "pyarrow")

# Inserts and queries as a sink process does (attach=True), then as the CLI does (a plain
# open_store that finds the owner), and reports what it imported.
CLIENT = """
import json, sys
from pathlib import Path
from agentaudit.settings import Settings
from agentaudit.store import open_store
from agentaudit.store.bench import events_like

settings = Settings(data_dir=Path(sys.argv[1]))
with open_store(settings, attach=True) as store:
    columns, names = events_like(200)
    store.insert("agentaudit.events", columns, names)
    rows = store.query(
        "SELECT event_id, occurred_at FROM agentaudit.events ORDER BY event_id"
    ).result_rows
with open_store(settings) as store:
    counted = store.command("SELECT count() FROM agentaudit.events")
print(json.dumps({
    "rows": len(rows),
    "aware": all(r[1].tzinfo is not None for r in rows),
    "counted": counted,
    "heavy": [m for m in sys.argv[2:] if m in sys.modules],
}))
"""


def test_a_process_attached_over_http_imports_no_chdb_nor_dataframe_libraries(
    tmp_path: Path,
) -> None:
    owner = spawn(OWNER, tmp_path)
    try:
        assert owner.stdout is not None and "ready" in owner.stdout.readline()
        client = subprocess.run(
            [sys.executable, "-c", CLIENT, str(tmp_path), *HEAVY],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        stop(owner)
    assert client.returncode == 0, client.stderr
    report = json.loads(client.stdout)
    assert report["heavy"] == [], f"imported {report['heavy']}"
    assert report == {"rows": 200, "aware": True, "counted": 200, "heavy": []}


def test_a_process_that_imported_pandas_first_keeps_clickhouse_connects_pandas() -> None:
    """The store tells clickhouse-connect pandas is absent only where it is not imported."""
    code = (
        "import pandas, numpy\n"
        "import agentaudit.store\n"
        "from clickhouse_connect.driver import options\n"
        "print(options.pd is pandas and options.np is numpy)\n"
    )
    found = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert found.returncode == 0 and found.stdout == "True\n", found.stderr
