"""The consumer layer at the end of a rebalance: no stream record is taken from aiokafka while
faust may still clear the streams' queues, and a seek to the committed offsets comes after a
fetch already under way.

faust ends a recovery by resuming the stream partitions, seeking them to their committed
offsets and then resuming the app's flow control, which clears every stream queue; its fetch
loop runs meanwhile. A record taken from aiokafka after the seek was queued, then cleared:
never delivered, and aiokafka's position already past it (the jobs' restart test stalled on
that 3 runs in 18 under load). These tests drive the real `FastConsumer.getmany` and
`perform_seek` in that order; only the consumer thread (aiokafka's side) is a stand-in that
holds a partition's records and hands each out once, as aiokafka's fetcher does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aiokafka.structs import ConsumerRecord
from faust.types import TP
from mode.utils.queues import FlowControlQueue

from agentaudit.settings import Settings
from stream_jobs.runtime import BatchMessage, FastConsumer, make_app, source_topic

EVENTS = TP("events", 0)


class _Broker:
    """aiokafka's side of the consumer: records of `EVENTS` handed out once (the position
    moves past them), and the order in which fetches and seeks happen."""

    beacon = None  # enough of a mode Service to be the consumer's dependency

    def __init__(self, offsets: range) -> None:
        self.pending = [
            ConsumerRecord(EVENTS.topic, 0, o, 0, 0, None, b"v", None, 0, 1, ()) for o in offsets
        ]
        self.calls: list[str] = []
        self.release = asyncio.Event()
        self.release.set()

    async def getmany(self, active: set[TP] | None, timeout: float) -> Mapping[TP, list[Any]]:
        self.calls.append("fetch")
        await self.release.wait()
        self.calls.append("fetched")
        if (active is not None and EVENTS not in active) or not self.pending:
            return {}
        taken, self.pending = self.pending, []
        return {EVENTS: taken}

    def assignment(self) -> set[TP]:
        return {EVENTS}

    async def seek_to_committed(self) -> Mapping[TP, int]:
        self.calls.append("seek")
        return {EVENTS: 250}


def _consumer(tmp_path: Path, broker: _Broker) -> FastConsumer:
    settings = Settings(kafka_bootstrap="127.0.0.1:1", data_dir=tmp_path, partitions=1)
    app = make_app(settings, app_id="rebalance")
    source_topic(app, EVENTS.topic, batched=True)

    class Stubbed(FastConsumer):
        def _new_consumer_thread(self) -> Any:
            return broker

    app.transport.Consumer = Stubbed
    consumer = app.consumer
    assert isinstance(consumer, Stubbed)
    consumer.resume_partitions({EVENTS})
    consumer.resume_flow()  # left on by recovery to read the changelogs
    app.flow_control.resume()
    return consumer


def _stream_queue(consumer: FastConsumer) -> FlowControlQueue[Any]:
    """A queue as faust gives each stream: cleared whenever the app's flow control resumes."""
    return FlowControlQueue(flow_control=consumer.app.flow_control, clear_on_resume=True)


async def _poll(consumer: FastConsumer, queue: FlowControlQueue[Any]) -> None:
    """One turn of the fetch loop: what it delivers goes into a stream's queue."""
    async for _tp, message in consumer.getmany(timeout=0.01):
        queue.put_nowait(message)


def _offsets(queue: FlowControlQueue[Any]) -> list[int]:
    out: list[int] = []
    while not queue.empty():
        message = queue.get_nowait()
        assert isinstance(message, BatchMessage)
        out += [offset for offset, _value, _ms in message.value]
    return out


async def test_no_stream_record_is_taken_before_the_rebalance_clears_the_queues(
    tmp_path: Path,
) -> None:
    broker = _Broker(range(250, 500))
    consumer = _consumer(tmp_path, broker)
    app = consumer.app
    stream_queue = _stream_queue(consumer)
    app.rebalancing = True  # aiokafka's rebalance listener sets it first

    await consumer.perform_seek()  # faust's order: resume partitions, seek, ...
    await _poll(consumer, stream_queue)  # ... the fetch loop runs meanwhile ...
    app.flow_control.resume()  # ... then the flow control resumes: queues cleared
    app.rebalancing = False  # the rebalance has ended
    await _poll(consumer, stream_queue)

    assert _offsets(stream_queue) == list(range(250, 500))


async def test_a_seek_to_the_committed_offsets_waits_for_a_fetch_under_way(
    tmp_path: Path,
) -> None:
    broker = _Broker(range(250, 500))
    consumer = _consumer(tmp_path, broker)
    broker.release.clear()
    fetching = asyncio.create_task(_poll(consumer, _stream_queue(consumer)))
    while broker.calls != ["fetch"]:
        await asyncio.sleep(0)
    seeking = asyncio.create_task(consumer.perform_seek())
    for _ in range(20):  # give the seek every chance to overtake the fetch
        await asyncio.sleep(0)
    assert broker.calls == ["fetch"]
    broker.release.set()
    await asyncio.gather(fetching, seeking)
    assert broker.calls == ["fetch", "fetched", "seek"]
