"""`agentaudit status` and `query`'s warning end to end: events wait on the topic with no worker
(status exit 1, "writer down", and query warns on stderr with a clean result), then a sink
stores them (status exit 0 and query silent); and a broker that is gone is exit 3.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from agentaudit.broker import ensure_topics
from agentaudit.settings import Settings
from agentaudit.store import open_store
from agentaudit.store.migrations import migrate
from tests.conftest import settings_env
from tests.factories import event_dict, wire
from tests.integration.helpers import produce_raw, sink_until

pytestmark = pytest.mark.integration


def _cli(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentaudit.cli.main", *args],
        env={**settings_env(settings), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _status(settings: Settings) -> tuple[int, dict[str, str], dict]:
    done = _cli(settings, "status", "--format", "json")
    doc = json.loads(done.stdout)
    assert doc["exit_code"] == done.returncode, done.stderr
    return done.returncode, {c["name"]: c["state"] for c in doc["checks"]}, doc


async def test_status_and_query_warn_while_the_writer_is_down_then_not(settings: Settings) -> None:
    settings = settings.model_copy(update={"stream_jobs": False})  # no heartbeat expected
    await ensure_topics(settings)
    with open_store(settings) as store:
        migrate(store)
    await produce_raw(settings, [(b"acme", wire(event_dict("acme"))) for _ in range(30)])

    code, states, doc = _status(settings)
    assert code == 1 and states["writer"] == "degraded", doc
    sink = [x for x in doc["lag"] if x["group"] == settings.consumer_group]
    assert sum(x["lag"] for x in sink) == 30, doc["lag"]
    query = _cli(settings, "query", "SELECT count() AS n FROM agentaudit.events", "-f", "json")
    assert query.returncode == 0 and json.loads(query.stdout) == {"n": 0}
    warning = query.stderr.strip().splitlines()
    assert len(warning) == 1 and warning[0].startswith("warning: the store's writer is down"), (
        query.stderr
    )

    with open_store(settings) as store:
        await sink_until(settings, store, lambda w: w.processor.counters.accepted == 30)
    code, states, doc = _status(settings)
    assert code == 0, doc
    assert doc["store"]["inserts"]["total"] == 30 and states["checkpoints"] == "ok"
    query = _cli(settings, "query", "SELECT count() AS n FROM agentaudit.events", "-f", "json")
    assert json.loads(query.stdout) == {"n": 30} and query.stderr == ""


def test_status_with_the_broker_gone_is_exit_3(settings: Settings) -> None:
    gone = settings.model_copy(update={"kafka_bootstrap": "127.0.0.1:1"})
    done = _cli(gone, "status")
    assert done.returncode == 3, done.stdout + done.stderr
    assert "broker        ERROR" in done.stdout and done.stderr == ""
