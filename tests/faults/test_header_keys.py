"""A record whose header key is not UTF-8, through the real broker into a running sink: before,
aiokafka's strict decoding raised UnicodeDecodeError out of getmany, the sink died at that
batch (no record of it stored, the valid ones included) and again after every restart. Now
every record is stored or dead-lettered, the bad key kept escaped. The fast case (aiokafka's
fetcher code over built batches): tests/unit/sink/test_header_keys.py. Full matrix only: a
group join (~6 s)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from agentaudit.broker import ensure_topics
from agentaudit.settings import Settings
from agentaudit.store import open_store
from agentaudit.store.migrations import migrate
from tests.factories import event_dict, wire
from tests.faults.conftest import FULL
from tests.integration.helpers import produce_raw, sink_until

# aiokafka's pure-Python record builder calls .encode on each header key: a str whose bytes
# are not UTF-8 goes on the wire as they are.
_PRODUCE = """
import asyncio, sys
from aiokafka import AIOKafkaProducer

class RawKey(str):
    def encode(self, *args, **kwargs):
        return b"\\xff\\xfebad"

async def main():
    producer = AIOKafkaProducer(bootstrap_servers=sys.argv[1])
    await producer.start()
    headers = [(RawKey("k"), b"v")]
    await producer.send_and_wait(sys.argv[2], b'{"x": 1}', key=b"acme", headers=headers)
    await producer.stop()

asyncio.run(main())
"""


@pytest.mark.skipif(not FULL, reason="full matrix only (FAULT_MATRIX=full)")
async def test_a_record_with_a_non_utf8_header_key_does_not_stop_the_sink(
    settings: Settings,
) -> None:
    settings = settings.model_copy(update={"partitions": 1})
    await ensure_topics(settings)
    await produce_raw(settings, [(b"acme", wire(event_dict()))])
    env = {**os.environ, "AIOKAFKA_NO_EXTENSIONS": "1"}
    args = [sys.executable, "-c", _PRODUCE, settings.kafka_bootstrap, settings.events_topic]
    subprocess.run(args, env=env, check=True, timeout=60)
    await produce_raw(settings, [(b"acme", wire(event_dict())) for _ in range(3)])
    with open_store(settings, own=True) as store:
        migrate(store)
        worker = await sink_until(
            settings,
            store,
            lambda w: (
                w.processor.counters.events_stored + w.processor.counters.dead_letters_stored >= 5
            ),
        )
        c = worker.processor.counters
        assert (c.events_stored, c.dead_letters_stored) == (4, 1)
        rows = store.query(
            "SELECT kafka_offset, reason, kafka_headers FROM agentaudit.dead_letters"
        ).result_rows
        assert rows == [(1, "unknown_type", [{"name": "\\xff\\xfebad", "value": "v"}])]
