"""`agentaudit query` is read-only: every destructive or escaping statement is refused by
ClickHouse's own parser (real chDB) and leaves the trail exactly as it was."""

from __future__ import annotations

import io
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from agentaudit.errors import BadQuery
from agentaudit.services import run_query
from agentaudit.settings import Settings
from agentaudit.sqlguard import Limits, run_readonly
from agentaudit.store import ClickHouseStore, open_store
from agentaudit.store.bench import events_like
from agentaudit.store.migrations import migrate
from tests.helpers_wait import poll_value
from tests.integration.test_cli import cli
from tests.integration.test_store import OWNER, spawn, stop

pytestmark = pytest.mark.integration

# The trail's fingerprint: every agentaudit table with its rows, and a hash over every event.
FINGERPRINT = """
SELECT (SELECT groupArray((name, total_rows)) FROM (SELECT name, total_rows FROM system.tables
          WHERE database = 'agentaudit' ORDER BY name)),
       (SELECT (count(), sum(cityHash64(event_id, tenant_id, payload, row_hash)))
          FROM agentaudit.events)
"""


@pytest.fixture(scope="module")
def trail(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, ClickHouseStore]]:
    """A migrated store with 300 events, owned by this process for the module."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("trail"))
    with open_store(settings) as store:
        migrate(store)
        columns, names = events_like(300)
        store.insert("agentaudit.events", columns, names)
        yield settings, store


def fingerprint(store: ClickHouseStore) -> Any:
    return store.query(FINGERPRINT).result_rows[0]


def query(settings: Settings, sql: str) -> str:
    out = io.StringIO()
    run_query(settings, sql, "json", Console(file=out, width=200))
    return out.getvalue()


def destructive(tmp: Path) -> list[str]:
    """The statements the issue ran through `agentaudit query`, and ways of hiding them."""
    passwd = "file('/etc/passwd', 'LineAsString')"
    return [
        "INSERT INTO agentaudit.events SELECT * FROM agentaudit.events",
        "INSERT INTO agentaudit.events_ingest (payload) VALUES ('x')",
        "ALTER TABLE agentaudit.events UPDATE tenant_id = 'x' WHERE 1",
        "ALTER TABLE agentaudit.events DELETE WHERE 1",
        "DELETE FROM agentaudit.events WHERE 1",
        "TRUNCATE TABLE agentaudit.events",
        "DROP TABLE agentaudit.events",
        "DROP DATABASE agentaudit",
        "RENAME TABLE agentaudit.events TO agentaudit.gone",
        "OPTIMIZE TABLE agentaudit.events FINAL",
        "CREATE TABLE agentaudit.x (a UInt8) ENGINE = Memory",
        "SET readonly = 0",
        "USE system",
        "SYSTEM DROP MARK CACHE",
        f"INSERT INTO FUNCTION file('{tmp}/written.csv', 'CSV') SELECT 1",
        f"SELECT * FROM {passwd}",
        f"SELECT {passwd.replace(', ' + repr('LineAsString'), '')}",  # the scalar file()
        "SELECT * FROM merge('agentaudit', '.*')",
        "SELECT * FROM mergeTreeIndex('agentaudit', 'events')",
        "SELECT * FROM mergeTreeProjection('agentaudit', 'events', 'p')",
        "SELECT * FROM numbers(3)",
        "SELECT * FROM remote('127.0.0.1', 'agentaudit', 'events')",
        "SELECT * FROM url('http://127.0.0.1:9/x', 'CSV', 'a String')",
        "SELECT * FROM s3('http://127.0.0.1:9/bucket/x.csv')",
        "SELECT * FROM view(SELECT * FROM agentaudit.events)",
        "SELECT dictGet('d', 'x', toUInt64(1))",
        "SELECT aiGenerate('x', map('credentials', 'c'))",  # an LLM provider over HTTP
        "SELECT AIClassify('x', ['a', 'b'])",
        "SELECT * FROM system.users",
        "SELECT query FROM system.query_log",
        "SELECT 1 WHERE 'x' IN system.query_log",
        "SELECT 1; DROP TABLE agentaudit.events",  # several statements
        "SELECT 1 -- ;\n; DROP DATABASE agentaudit",
        "/* read */ DrOp /* it */ TaBlE agentaudit.events",  # comments and case
        "sElEcT * fRoM FiLe('/etc/passwd', 'LineAsString')",
        "SELECT * FROM `mergeTreeIndex`('agentaudit', 'events')",  # quoted name
        "SELECT * FROM/**/merge('agentaudit', '.*')",
        "SELECT 1 SETTINGS readonly = 0",
        "SELECT * FROM (SELECT 1 SETTINGS max_execution_time = 100000, limit = 1)",
        f"WITH t AS (SELECT * FROM {passwd}) SELECT * FROM t",  # CTE
        f"SELECT * FROM agentaudit.events AS e JOIN {passwd} AS f ON 1",  # JOIN
        "SELECT * FROM agentaudit.events, merge('agentaudit', '.*')",  # comma join
        f"SELECT count() FROM agentaudit.events WHERE tenant_id IN (SELECT * FROM {passwd})",
        "SELECT (SELECT count() FROM merge('agentaudit', '.*'))",  # scalar subquery
        f"SELECT 1 UNION ALL SELECT count() FROM {passwd}",
        # fake dump lines
        f"SELECT * FROM {passwd} AS `f\n      TableIdentifier agentaudit.events`",
        f"DESCRIBE TABLE {passwd}",
        f"SELECT 1 INTO OUTFILE '{tmp}/out.txt'",
        "SELECT 1 FORMAT CSV",
        "EXPLAIN SELECT * FROM agentaudit.events",
    ]


def test_every_destructive_statement_is_refused_and_the_trail_is_unchanged(
    trail: tuple[Settings, ClickHouseStore], tmp_path: Path
) -> None:
    settings, store = trail
    before = fingerprint(store)
    assert before[1][0] == 300
    accepted = []
    for sql in destructive(tmp_path):
        try:
            query(settings, sql)
            accepted.append(sql)
        except BadQuery as exc:
            assert exc.exit_code == 5
            assert "\n" not in str(exc), str(exc)
            assert str(exc).startswith("refused: ") or "Multi-statements" in str(exc), (sql, exc)
        assert fingerprint(store) == before, sql
    assert accepted == []
    assert list(tmp_path.iterdir()) == []  # nothing written through file() or INTO OUTFILE


def test_reasons_name_what_was_refused(trail: tuple[Settings, ClickHouseStore]) -> None:
    settings, _ = trail
    expected = {
        "INSERT INTO agentaudit.events SELECT * FROM agentaudit.events": "INSERT is not allowed",
        "DROP DATABASE agentaudit": "DROP is not allowed",
        "SELECT * FROM mergeTreeIndex('agentaudit', 'events')": "table function mergeTreeIndex()",
        "SELECT 1 SETTINGS readonly = 0": "SETTINGS clause is not allowed",
        "SELECT * FROM system.users": "table system.users is outside",
        "SELECT 1 FORMAT CSV": "use --format",
    }
    for sql, reason in expected.items():
        with pytest.raises(BadQuery, match=reason):
            query(settings, sql)


def test_legitimate_reads_still_work(trail: tuple[Settings, ClickHouseStore]) -> None:
    settings, store = trail
    reads = [
        (
            "SELECT tenant_id, count() AS n, sum(cost_usd) FROM agentaudit.events "
            "GROUP BY tenant_id ORDER BY n DESC, tenant_id LIMIT 3"
        ),
        (
            "SELECT e.tenant_id, count() FROM agentaudit.events AS e "
            "LEFT JOIN agentaudit.alerts AS a ON a.tenant_id = e.tenant_id GROUP BY e.tenant_id"
        ),
        "WITH t AS (SELECT tenant_id FROM agentaudit.events) SELECT count() AS n FROM t",
        (
            "SELECT count() FROM agentaudit.events WHERE tenant_id IN "
            "(SELECT tenant_id FROM agentaudit.events WHERE type = 'llm_call') "
            "UNION ALL SELECT (SELECT count() FROM agentaudit.dead_letters)"
        ),
        "SELECT 1 AS one; -- trailing terminator and comment",
        "SELECT sum(rows) FROM system.parts WHERE database = 'agentaudit' AND active",
        "SHOW TABLES FROM agentaudit",
        "DESCRIBE TABLE agentaudit.events",
        "EXISTS TABLE agentaudit.events",
        (
            "SELECT tenant_id, count() AS n FROM agentaudit.events GROUP BY tenant_id "
            "ORDER BY n DESC, tenant_id LIMIT 2 OFFSET 1 SETTINGS limit = 5"
        ),  # only rows: harmless
    ]
    for sql in reads:
        assert query(settings, sql).strip(), sql
    first = query(settings, "SELECT count() AS n FROM agentaudit.events")
    assert json.loads(first) == {"n": 300}
    ordered = run_readonly(store, "SELECT tenant_id FROM agentaudit.events ORDER BY tenant_id DESC")
    tenants = [row[0] for row in ordered.result_rows]
    assert tenants == sorted(tenants, reverse=True)  # the fence keeps the statement's order


def test_the_run_is_fenced_by_readonly_and_limits(trail: tuple[Settings, ClickHouseStore]) -> None:
    _, store = trail
    fence = run_readonly(
        store,
        "SELECT getSetting('readonly') AS ro, getSetting('max_execution_time') AS t",
        limits=Limits(max_seconds=7),
    )
    assert fence.result_rows == [(1, 7.0)]
    # Columns only (clickhouse-connect took the judge's EXPLAIN of it for its LIMIT 0 probe).
    columns = run_readonly(store, "SELECT tenant_id, chain_seq FROM agentaudit.events LIMIT 0")
    assert (columns.result_rows, list(columns.column_names)) == ([], ["tenant_id", "chain_seq"])
    with pytest.raises(BadQuery, match="returned more than 5 rows"):
        run_readonly(store, "SELECT arrayJoin(range(10))", limits=Limits(max_rows=5))
    # Few rows, many bytes (the probe: 20 rows of repeat(), 720 MB held per slow reader).
    big = "SELECT repeat(toString(event_id), 4096) FROM agentaudit.events"
    with pytest.raises(BadQuery, match=r"returned more than 1000000 rows or 1 MiB"):
        run_readonly(store, big, limits=Limits(max_result_bytes=1 << 20))
    assert (
        len(
            run_readonly(
                store, big + " LIMIT 5", limits=Limits(max_result_bytes=1 << 20)
            ).result_rows
        )
        == 5
    )
    # The shared embedded session is left as it was for the next caller (the sink).
    assert store.command("SELECT getSetting('readonly')") == 0


def _cli_checks(data_dir: Path) -> None:
    refused = cli("query", "DROP TABLE agentaudit.events", data_dir=data_dir)
    assert refused.returncode == 5, (refused.stdout, refused.stderr)
    assert "Traceback" not in refused.stderr
    assert "refused: DROP is not allowed in agentaudit query (read-only)" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    escaped = cli("query", "SELECT * FROM file('/etc/passwd', 'LineAsString')", data_dir=data_dir)
    assert escaped.returncode == 5 and "root:" not in escaped.stdout
    counted = cli(
        "query", "SELECT count() AS n FROM agentaudit.events", "-f", "csv", data_dir=data_dir
    )
    assert counted.returncode == 0 and counted.stdout == "n\n300\n", counted.stderr


def _seeded_owner(data_dir: Path) -> subprocess.Popen[str]:
    """A child process that owns a migrated store holding 300 events (this process may not
    open a second chDB directory)."""
    owner = spawn(OWNER, data_dir)
    assert owner.stdout is not None and "ready" in owner.stdout.readline()
    with open_store(Settings(data_dir=data_dir), attach=True) as store:
        columns, names = events_like(300)
        store.insert("agentaudit.events", columns, names)
        poll_value(
            lambda: store.command("SELECT count() FROM agentaudit.events") == 300,
            30,
            "the 300 events stored",
        )
    return owner


def test_cli_refuses_when_it_opens_the_store_itself(tmp_path: Path) -> None:
    stop(_seeded_owner(tmp_path))
    _cli_checks(tmp_path)


def test_cli_refuses_through_the_process_that_owns_the_store(tmp_path: Path) -> None:
    owner = _seeded_owner(tmp_path)
    try:
        _cli_checks(tmp_path)
    finally:
        stop(owner)
