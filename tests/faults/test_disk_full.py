"""The store's disk full during an insert, then freed: the sink waits and stores everything
exactly once, with no restart. Before, the engine's NOT_ENOUGH_SPACE (243) stopped the sink
(StoreRefused, exit 6) and it stayed down after the space was freed: 50 of 100 stored. The
fast case is the classification (tests/unit/store/test_protocol_pieces.py). Full matrix only,
and only as root (a small tmpfs is the full disk)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentaudit.broker import LocalBroker, ensure_topics
from agentaudit.sink.base import run_sink
from agentaudit.sink.worker import SinkWorker
from agentaudit.store import open_store
from agentaudit.store.migrations import migrate
from tests.factories import event_dict, wire
from tests.faults.conftest import FULL, fault_settings
from tests.helpers_wait import poll_until
from tests.integration.helpers import produce_raw, scalar


@contextlib.contextmanager
def small_disk(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)])
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(disk: Path, leave: int) -> Path:
    st = os.statvfs(disk)
    filler = disk / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - leave))
    return filler


@pytest.mark.skipif(not FULL or os.geteuid() != 0, reason="full matrix, as root")
async def test_a_full_disk_stalls_the_sink_and_freeing_it_resumes(
    broker: LocalBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with small_disk(tmp_path / "disk", "40m") as disk:
        settings = fault_settings(
            broker, disk, partitions=1, key_dir=tmp_path / "keys", checkpoint_interval_s=0
        )
        settings = settings.model_copy(update={"consumer_group": f"g-{uuid.uuid4().hex[:8]}"})
        await ensure_topics(settings)
        with open_store(settings, own=True) as store:
            migrate(store)
            worker = SinkWorker(settings, store)
            stop = asyncio.Event()
            task = asyncio.create_task(run_sink(worker, stop, "events"))
            counters = worker.processor.counters
            await produce_raw(settings, [(b"acme", wire(event_dict())) for _ in range(50)])
            await poll_until(lambda: counters.events_stored >= 50, 60, "the first 50 stored")
            filler = _fill(disk, leave=8000)
            await produce_raw(settings, [(b"acme", wire(event_dict())) for _ in range(50)])
            # The insert refused for the full disk, and the sink still running after it.
            await poll_until(
                lambda: "code 243" in caplog.text or task.done(), 60, "an insert on a full disk"
            )
            assert not task.done(), "the sink stopped on a full disk"
            assert counters.events_stored == 50
            filler.unlink()
            await poll_until(
                lambda: counters.events_stored >= 100 or task.done(), 60, "the rest stored"
            )
            stop.set()
            await task
            assert scalar(store, "SELECT count() FROM agentaudit.events") == 100
            assert scalar(store, "SELECT uniqExact(event_id) FROM agentaudit.events") == 100
