"""The proof for auditors (issue 11): a bypass corpus of attempts drawn from ClickHouse's
row-policy history and Helicone's regression list (`auditor_bypass.json`), each run against a
store holding twenty tenants' rows by an auditor of one tenant, through the CLI path and through
the store's HTTP endpoint (clickhouse-connect with the auditor's name and token). For every
attempt: no row of another tenant (a scoped attempt returns exactly what the operator gets with
an explicit `WHERE tenant_id = ...`), no write, and the attempt recorded as refused or allowed.
One store and one sink run for the whole corpus.

Each attempt runs once per process (`Trail.attempt`), whichever test asks for it first: the
trail test runs the ones not run yet, so it holds alone, after any subset, and in any order
(it once counted what the other tests had run before it, and failed without them)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Attempt:
    """One corpus attempt on both channels: the sorted rows, or the error, of each; what the
    operator's `same_as` gave at that moment (the sink adds rows later); whether it wrote."""

    cli: list[tuple[Any, ...]] | Exception
    http: list[tuple[Any, ...]] | Exception
    operator: list[tuple[Any, ...]] | None
    wrote_nothing: bool


class Trail:
    def __init__(self, settings: Settings, store: ClickHouseStore, token: str) -> None:
        self.settings, self.store, self.token = settings, store, token
        live = read_live_endpoint(settings)
        assert live is not None
        host, _, port = live.url.removeprefix("http://").partition(":")
        self.http = clickhouse_connect.get_client(
            host=host, port=int(port), username="kim", password=token, compress=False
        )
        self.before = fingerprint(store)
        self._attempts: dict[str, Attempt] = {}

    def attempt(self, case: dict[str, Any]) -> Attempt:
        """`case` run on both channels, the first time it is asked for; then its outcome."""
        if case["id"] not in self._attempts:
            sql = case["sql"]
            cli = _outcome(lambda: run_cli(self.settings, self.store, "kim", self.token, sql))
            http = _outcome(lambda: self.http.query(sql))
            same_as = case.get("same_as")
            operator = _rows(self.store.query(same_as).result_rows) if same_as else None
            wrote_nothing = fingerprint(self.store) == self.before
            self._attempts[case["id"]] = Attempt(cli, http, operator, wrote_nothing)
        return self._attempts[case["id"]]


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


def _outcome(run: Callable[[], Any]) -> list[tuple[Any, ...]] | Exception:
    try:
        return _rows(run().result_rows)
    except Exception as exc:  # noqa: BLE001 - refused or failed: the tests assert on which
        return exc


@pytest.mark.parametrize("case", CORPUS, ids=[c["id"] for c in CORPUS])
def test_attempt_is_scoped_or_refused_on_both_channels(trail: Trail, case: dict[str, Any]) -> None:
    attempt = trail.attempt(case)
    if case["expect"] == "refused":
        assert isinstance(attempt.cli, BadQuery) and "refused" in str(attempt.cli), attempt.cli
        assert isinstance(attempt.http, DatabaseError), attempt.http
        assert "refused" in str(attempt.http), attempt.http
    else:
        assert attempt.operator is not None
        assert attempt.cli == attempt.operator
        assert attempt.http == attempt.operator
    assert attempt.wrote_nothing  # no write, whatever the attempt


def test_every_attempt_is_recorded_in_the_tenants_trail(trail: Trail) -> None:
    for case in CORPUS:
        trail.attempt(case)  # those no other test in this process has run yet
    refused = sum(c["expect"] == "refused" for c in CORPUS)
    expected = Counter(refused=2 * refused, allowed=2 * (len(CORPUS) - refused))  # 2 channels
    n = 2 * len(CORPUS)
    asyncio.run(
        sink_until(trail.settings, trail.store, lambda w: w.processor.counters.accepted >= n)
    )
    rows = trail.store.query(
        "SELECT verdict, channel, auditor, tenant_id, tenants FROM agentaudit.auditor_queries"
    ).result_rows
    assert Counter(r[0] for r in rows) == expected
    assert Counter(r[1] for r in rows) == {"cli": len(CORPUS), "http": len(CORPUS)}
    assert {(r[2], r[3], tuple(r[4])) for r in rows} == {("kim", TENANT, (TENANT,))}
    # The auditor sees its own reads (the view is scoped like any table), nobody else's.
    seen = trail.http.query("SELECT count(), uniqExact(tenant_id) FROM agentaudit.auditor_queries")
    assert tuple(seen.result_rows[0])[1] == 1
