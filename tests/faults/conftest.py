"""The fault suite (issue 9): every test here is marked `faults` and `integration`.

`FAULT_MATRIX=full` (what `./run faults` sets) selects the full matrix; unset, the fast
subset runs as part of `./run test`. The variable is not `AGENTAUDIT_*` on purpose: the
top-level conftest clears those. Figures of every scenario are printed at the end of the
run and kept in pytest's cache (`.pytest_cache/v/faults/figures`).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agentaudit.broker import LocalBroker
from agentaudit.settings import Settings

FULL = os.environ.get("FAULT_MATRIX", "").lower() == "full"
_FIGURES: list[dict[str, Any]] = []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.faults)
            item.add_marker(pytest.mark.integration)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if not _FIGURES:
        return
    terminalreporter.section(f"fault suite figures ({'full matrix' if FULL else 'fast subset'})")
    for fig in _FIGURES:
        terminalreporter.write_line("  ".join(f"{k}={v}" for k, v in fig.items()))
    if getattr(config, "cache", None) is not None:
        config.cache.set("faults/figures", _FIGURES)


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Iterator[Callable[..., None]]:
    """`figures(**values)` records this scenario's figures (kept even when it fails)."""
    entry: dict[str, Any] = {"test": request.node.name}
    _FIGURES.append(entry)
    yield entry.update


def fault_settings(
    broker: LocalBroker | str, tmp_path: Path, partitions: int = 3, **changes: Any
) -> Settings:
    """Settings with topics, consumer group and data dir of one scenario."""
    tag = uuid.uuid4().hex[:10]
    bootstrap = broker if isinstance(broker, str) else broker.bootstrap
    names = ("events", "dlq", "alerts", "control", "budgets", "goldsets", "pins")
    return Settings(
        kafka_bootstrap=bootstrap,
        data_dir=tmp_path / "data",
        **{f"{n}_topic": f"fault-{tag}.{n}" for n in names},  # type: ignore[arg-type]
        consumer_group=f"fault-sink-{tag}",
        partitions=partitions,
        sink_flush_interval_ms=100,
        **changes,
    )
