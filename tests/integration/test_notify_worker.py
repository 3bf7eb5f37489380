"""Delivery inside the worker (`AGENTAUDIT_ALERT_ROUTES`) and `agentaudit notify` alone.

A routing file that cannot be loaded is logged and counted and never stops the sink; once
fixed, the worker's notifier reads it again and delivers, without a restart.
"""

from __future__ import annotations

import asyncio
import io
import logging
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from rich.console import Console

from agentaudit.broker import ensure_topics, free_port
from agentaudit.services import serve_worker
from agentaudit.settings import Settings
from tests.conftest import settings_env
from tests.factories import event_dict, wire
from tests.faults.conftest import FULL
from tests.helpers_wait import poll_until
from tests.integration.helpers import produce_raw, scalar, served_store
from tests.integration.test_notify import Receiver
from tests.unit.notify.alerts import make_alert

pytestmark = pytest.mark.integration

TOKEN = "T0SECRET/B0SECRET/xoxbSecretToken123"


def _failed() -> float:
    return (
        REGISTRY.get_sample_value(
            "agentaudit_alert_deliveries_total", {"receiver": "*", "outcome": "failed"}
        )
        or 0.0
    )


async def test_worker_delivers_and_a_broken_routing_file_never_stops_the_sink(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        f'receivers: [{{name: hook, type: webhook, url: "https://h.example/{TOKEN}",'
        " timeout_s: -1}]\nroutes: [{receiver: hook}]\n"
    )
    settings = settings.model_copy(
        update={"alert_routes": routes, "stream_jobs": False, "checkpoint_interval_s": 0}
    )
    hook = Receiver(tmp_path, "hook")
    failed_before = _failed()
    stop = asyncio.Event()
    caplog.set_level(logging.ERROR, logger="agentaudit.notify")
    worker = asyncio.create_task(serve_worker(settings, stop, Console(file=io.StringIO())))
    alive = {"check": lambda: worker.result() if worker.done() else None}
    try:
        await poll_until(lambda: _failed() > failed_before, 30, "the bad file counted", **alive)  # type: ignore[arg-type]
        await produce_raw(settings, [(b"nw-a", wire(event_dict(tenant="nw-a"))) for _ in range(5)])
        async with served_store(settings, worker) as store:
            await poll_until(
                lambda: scalar(store, "SELECT count() FROM agentaudit.events") == 5,
                30,
                "the sink stores on",
                **alive,
            )  # type: ignore[arg-type]
        logged = caplog.text
        assert "alert delivery is not running" in logged and "timeout_s" in logged
        assert TOKEN not in logged

        hook.start()
        routes.write_text(
            f'receivers: [{{name: hook, type: webhook, url: "{hook.url}"}}]\n'
            "routes: [{receiver: hook}]\n"
        )
        alert = make_alert(1, tenant="nw-a", fired_at=datetime.now(UTC))
        await produce_raw(
            settings, [(b"nw-a", alert.model_dump_json().encode())], topic=settings.alerts_topic
        )
        await poll_until(
            lambda: [p["key"] for p in hook.posts()] == [alert.alert_id],
            60,
            "the fixed file read again and the alert delivered",
            **alive,
        )  # type: ignore[arg-type]
    finally:
        stop.set()
        await asyncio.wait_for(worker, 60)
        hook.stop()


def test_notify_cli_refuses_a_bad_routing_file_without_showing_secrets(
    settings: Settings, tmp_path: Path
) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        f'receivers: [{{name: s, type: slack, url: "https://h.example/{TOKEN}", '
        "colour: red}]\nroutes: [{receiver: s}]\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "agentaudit.cli.main", "notify", "--routes", str(routes)],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "receivers.0.colour" in done.stderr and TOKEN not in done.stdout + done.stderr


@pytest.mark.faults
@pytest.mark.skipif(not FULL, reason="~6 s, the CLI's start and a group join: ./run faults")
async def test_notify_cli_serves_the_delivery_counters_on_metrics(
    settings: Settings, tmp_path: Path
) -> None:
    """`agentaudit notify` alone served no /metrics: its pending and retried counters, and the
    AlertDeliveryStalled rule on them, saw only the worker's delivery. A receiver with nothing
    listening: the alert waits (pending 1) and is retried, as /metrics says."""
    await ensure_topics(settings)
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        'receivers: [{name: down, type: webhook, url: "http://127.0.0.1:1/hook"}]\n'
        "routes: [{receiver: down}]\nbackoff: {base_s: 0.05, cap_s: 0.2}\n"
    )
    alert = make_alert(1, fired_at=datetime.now(UTC))
    await produce_raw(
        settings, [(b"acme", alert.model_dump_json().encode())], topic=settings.alerts_topic
    )
    port = free_port()
    env = {**settings_env(settings), "AGENTAUDIT_METRICS_PORT": str(port)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentaudit.cli.main", "notify", "--routes", str(routes)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )

    def scrape() -> str:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                return str(r.read().decode())
        except OSError:
            return ""

    def waiting_and_retried() -> bool:
        text = scrape()
        return (
            'agentaudit_alert_delivery_pending{receiver="down"} 1.0' in text
            and 'agentaudit_alert_deliveries_total{outcome="retried",receiver="down"}' in text
        )

    try:
        await poll_until(
            waiting_and_retried,
            60,
            "pending and retried on the notifier's /metrics",
            check=lambda: proc.poll() is None or pytest.fail(proc.stderr.read().decode()[-2000:]),  # type: ignore[union-attr]
            detail=lambda: scrape()[-1500:],
        )
    finally:
        proc.terminate()
        proc.wait(30)
