"""The proof for auditors (issue 11): a bypass corpus of attempts drawn from ClickHouse's
row-policy history and Helicone's regression list (`auditor_bypass.json`), each run against a
store holding twenty tenants' rows by an auditor of one tenant, through the CLI path and through
the store's HTTP endpoint (clickhouse-connect with the auditor's name and token). For every
attempt: no row of another tenant (a scoped attempt returns exactly what the operator gets with
an explicit `WHERE tenant_id = ...`), no write, and the attempt recorded as refused or allowed.
One store and one sink run for the whole corpus."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from agentaudit.auditors import registry
from agentaudit.auditors.gate import run_cli
from agentaudit.broker import LocalBroker, ensure_topics
from agentaudit.errors import BadQuery
from agentaudit.settings import Settings
from agentaudit.store import ClickHouseStore, open_store
from agentaudit.store.bench import events_like
from agentaudit.store.embedded import read_live_endpoint
from agentaudit.store.migrations import migrate
from tests.conftest import isolated_settings
from tests.integration.helpers import sink_until
from tests.integration.test_query_readonly import fingerprint

pytestmark = pytest.mark.integration

CORPUS = json.loads((Path(__file__).parent / "auditor_bypass.json").read_text())
TENANT = "tenant-1"


class Trail:
    def __init__(self, settings: Settings, store: ClickHouseStore, token: str) -> None:
        self.settings, self.store, self.token = settings, store, token
        live = read_live_endpoint(settings)
        assert live is not None
        host, _, port = live.url.removeprefix("http://").partition(":")
        self.http = clickhouse_connect.get_client(
            host=host, port=int(port), username="kim", password=token, compress=False
        )
        self.expected: Counter[str] = Counter()  # verdicts the access log must hold
        self.before = fingerprint(store)


@pytest.fixture(scope="module")
def trail(broker: LocalBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trail]:
    settings = isolated_settings(broker.bootstrap, tmp_path_factory.mktemp("auditors"))
    asyncio.run(ensure_topics(settings))
    with open_store(settings) as store:
        migrate(store)
        columns, names = events_like(400)  # tenant-0 .. tenant-19
        store.insert("agentaudit.events", columns, names)
        _, token = registry.add(store, "kim", [TENANT])
        t = Trail(settings, store, token)
        yield t
        t.http.close()


def _rows(rows: Any) -> list[tuple[Any, ...]]:
    return sorted(tuple(r) for r in rows)


@pytest.mark.parametrize("case", CORPUS, ids=[c["id"] for c in CORPUS])
def test_attempt_is_scoped_or_refused_on_both_channels(trail: Trail, case: dict[str, Any]) -> None:
    sql = case["sql"]
    if case["expect"] == "refused":
        with pytest.raises(BadQuery, match="refused"):
            run_cli(trail.settings, trail.store, "kim", trail.token, sql)
        with pytest.raises(DatabaseError, match="refused"):
            trail.http.query(sql)
        trail.expected["refused"] += 2
    else:
        expected = _rows(trail.store.query(case["same_as"]).result_rows)
        assert (
            _rows(run_cli(trail.settings, trail.store, "kim", trail.token, sql).result_rows)
            == expected
        )
        assert _rows(trail.http.query(sql).result_rows) == expected
        trail.expected["allowed"] += 2
    assert fingerprint(trail.store) == trail.before  # no write, whatever the attempt


def test_every_attempt_is_recorded_in_the_tenants_trail(trail: Trail) -> None:
    n = sum(trail.expected.values())
    assert n == 2 * len(CORPUS)
    asyncio.run(
        sink_until(trail.settings, trail.store, lambda w: w.processor.counters.accepted >= n)
    )
    rows = trail.store.query(
        "SELECT verdict, channel, auditor, tenant_id, tenants FROM agentaudit.auditor_queries"
    ).result_rows
    assert Counter(r[0] for r in rows) == trail.expected
    assert Counter(r[1] for r in rows) == {"cli": len(CORPUS), "http": len(CORPUS)}
    assert {(r[2], r[3], tuple(r[4])) for r in rows} == {("kim", TENANT, (TENANT,))}
    # The auditor sees its own reads (the view is scoped like any table), nobody else's.
    seen = trail.http.query("SELECT count(), uniqExact(tenant_id) FROM agentaudit.auditor_queries")
    assert tuple(seen.result_rows[0])[1] == 1
