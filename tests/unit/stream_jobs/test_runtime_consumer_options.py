"""The options the stream jobs' aiokafka consumer gets from faust and from our consumer thread."""

from __future__ import annotations

from pathlib import Path

from agentaudit.settings import Settings
from stream_jobs.runtime import make_app
from stream_jobs.runtime.consumer import FETCH_MAX_WAIT_MS


async def test_the_jobs_read_committed_records_only_as_the_sink_does(tmp_path: Path) -> None:
    # faust reads committed records only inside its own transactions; the jobs must count the
    # events the sink stores, and the sink skips aborted transactions' records.
    app = make_app(Settings(kafka_bootstrap="127.0.0.1:1", data_dir=tmp_path, partitions=2))
    consumer = app.consumer._thread._create_worker_consumer(app.transport)  # type: ignore[attr-defined]
    try:
        assert consumer._isolation_level == "read_committed"
        assert consumer._fetch_max_wait_ms == FETCH_MAX_WAIT_MS
    finally:
        await consumer.stop()
