"""The worker's /metrics against the store: counters equal the store's counts (with two sink
processes: the figures travel on their report lines), and a real Prometheus scrapes the
endpoint and answers the same values through its HTTP API.

`serve_worker` runs in this process on the real broker and chDB, the stream jobs off (they
are not what is measured here).
"""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console

from agentaudit.broker import ensure_topics, free_port
from agentaudit.errors import BadQuery, StoreUnavailable
from agentaudit.services import serve_worker
from agentaudit.settings import Settings
from agentaudit.store import open_store
from tests.factories import event_dict, wire
from tests.helpers_wait import poll_until
from tests.integration.helpers import produce_raw

pytestmark = pytest.mark.integration

PROMETHEUS = Path("/usr/bin/prometheus")
VALID, JUNK = 120, [b"{not json", b'{"tenant_id": "acme"}', b"[1, 2]", b""]


def _messages() -> list[tuple[bytes | None, bytes | None]]:
    docs = [event_dict(tenant=f"t{i % 3}") for i in range(VALID)]
    return [(d["tenant_id"].encode(), wire(d)) for d in docs] + [(b"t0", j) for j in JUNK]


def _store_counts(settings: Settings, *, attach: bool = True) -> tuple[int, dict[str, int], float]:
    """The store's counts; `attach` while the worker runs: opening the store before the worker
    does would make this test its owner, and the worker could not own it."""
    with open_store(settings, attach=attach) as store:
        events, last = store.query(
            "SELECT count(), toUnixTimestamp64Micro(max(ingested_at)) / 1e6 FROM agentaudit.events"
        ).result_rows[0]
        reasons = store.query(
            "SELECT reason, count() FROM agentaudit.dead_letters GROUP BY reason"
        ).result_rows
    return int(events), {str(r): int(n) for r, n in reasons}, float(last)


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def _run_worker(settings: Settings, body: Any) -> str:
    """Run the worker around `body`; what it printed."""
    await ensure_topics(settings)  # before producing: an auto-created topic has other partitions
    stop = asyncio.Event()
    printed = io.StringIO()
    worker = asyncio.create_task(serve_worker(settings, stop, Console(file=printed, width=300)))
    try:
        await body(worker)
    finally:
        stop.set()
        await worker
    return printed.getvalue()


async def _all_stored(settings: Settings, worker: asyncio.Task[None]) -> None:
    def done() -> bool:
        try:
            events, reasons, _ = _store_counts(settings)
        except (StoreUnavailable, BadQuery, DatabaseError):  # not served (or migrated) yet
            return False
        return events == VALID and sum(reasons.values()) == len(JUNK)

    await poll_until(
        lambda: asyncio.to_thread(done),
        90,
        "every message stored",
        interval=0.2,
        check=lambda: worker.done() and worker.result(),
    )


async def test_counters_equal_the_store_with_two_sink_processes(settings: Settings) -> None:
    port = free_port()
    settings = settings.model_copy(
        update={
            "metrics_port": port,
            "sink_processes": 2,
            "stream_jobs": False,
            "metrics_refresh_s": 0.2,
        }
    )

    async def body(worker: asyncio.Task[None]) -> None:
        await produce_raw(settings, _messages())
        await _all_stored(settings, worker)
        events, reasons, last = await asyncio.to_thread(_store_counts, settings)

        async def agrees() -> bool:
            m = await asyncio.to_thread(_scrape, port)
            return (
                m.get(("agentaudit_events_stored_total", ())) == events
                and all(
                    m.get(("agentaudit_dead_letters_total", (("reason", r),))) == n
                    for r, n in reasons.items()
                )
                and m.get(("agentaudit_last_insert_timestamp_seconds", ())) == pytest.approx(last)
            )

        await poll_until(
            agrees,
            30,
            "metrics equal to the store",
            interval=0.2,
            detail=lambda: repr(_scrape(port)),
        )
        m = await asyncio.to_thread(_scrape, port)
        for stage in ("process", "dead_letter_topic", "insert", "commit"):
            assert m[("agentaudit_sink_stage_seconds_count", (("stage", stage),))] >= 1, stage

        def sink_lag() -> dict[Any, float]:
            return {
                k: v
                for k, v in _scrape(port).items()
                if k[0] == "agentaudit_consumer_lag" and ("group", settings.consumer_group) in k[1]
            }

        await poll_until(
            lambda: len(lag := sink_lag()) == settings.partitions and set(lag.values()) == {0.0},
            30,
            "no lag once all is stored",
            interval=0.2,
            detail=lambda: repr(sink_lag()),
        )
        assert m[("agentaudit_checkpoint_age_seconds", ())] >= 0  # signed on assignment

    printed = await _run_worker(settings, body)
    # The stop line counts what the store took (it counted events as they joined a batch).
    events, reasons, _ = await asyncio.to_thread(_store_counts, settings, attach=False)
    stored = f"worker stopped: {events} events and {sum(reasons.values())} dead letters stored,"
    assert stored in printed, printed


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Any]:
    if not PROMETHEUS.exists():
        pytest.skip("Debian's prometheus is not installed")
    procs: list[subprocess.Popen[bytes]] = []

    def start(target_port: int) -> str:
        port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n  - job_name: agentaudit\n    scrape_interval: 1s\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{target_port}']}}]\n"
        )
        log = (tmp_path / "prometheus.log").open("wb")
        procs.append(
            subprocess.Popen(
                [
                    str(PROMETHEUS),
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        return f"http://127.0.0.1:{port}"

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _prom_query(base: str, promql: str) -> dict[tuple[tuple[str, str], ...], float]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    try:
        body = json.loads(urllib.request.urlopen(url, timeout=5).read())
    except OSError:
        return {}  # not up yet
    return {
        tuple(
            sorted(
                (k, v) for k, v in r["metric"].items() if k not in ("job", "instance", "__name__")
            )
        ): float(r["value"][1])
        for r in body["data"]["result"]
    }


async def test_a_real_prometheus_scrapes_the_worker(settings: Settings, prometheus: Any) -> None:
    port = free_port()
    settings = settings.model_copy(
        update={"metrics_port": port, "stream_jobs": False, "metrics_refresh_s": 0.2}
    )
    base = prometheus(port)

    async def body(worker: asyncio.Task[None]) -> None:
        await produce_raw(settings, _messages())
        await _all_stored(settings, worker)
        events, reasons, last = await asyncio.to_thread(_store_counts, settings)
        expected = {
            "agentaudit_events_stored_total": {(): float(events)},
            "agentaudit_dead_letters_total": {
                (("reason", r),): float(n) for r, n in reasons.items()
            },
            "agentaudit_last_insert_timestamp_seconds": {(): last},
            f'agentaudit_consumer_lag{{group="{settings.consumer_group}"}}': {
                (
                    ("group", settings.consumer_group),
                    ("partition", str(p)),
                    ("topic", settings.events_topic),
                ): 0.0
                for p in range(settings.partitions)
            },
        }
        got: dict[str, Any] = {}

        async def scraped() -> bool:
            for promql in expected:
                got[promql] = await asyncio.to_thread(_prom_query, base, promql)
            return all(got[q] == pytest.approx(v) for q, v in expected.items())

        await poll_until(
            scraped,
            60,
            "Prometheus to hold the store's figures",
            interval=0.5,
            detail=lambda: f"got {got}, expected {expected}",
        )
        stages = await asyncio.to_thread(_prom_query, base, "agentaudit_sink_stage_seconds_count")
        assert {dict(k)["stage"] for k in stages} >= {"process", "insert", "commit"}

    started = time.monotonic()
    await _run_worker(settings, body)
    assert time.monotonic() - started < 90
