"""`BatchingStream.skip`: a batch the body did not apply is released, not acknowledged, when
the body asks for the next list, so no commit passes over it before it is delivered again.

The jobs' delivery fence skips a batch that starts past a hole and seeks back. Acked, the
skipped batch let faust's next commit pass over the whole hole: the consumer's delivery loop
records the offsets a delivery jumped over as a gap (from committed + 1), faust fills gaps in
as acked up to the highest acked offset, and it accepts acked offsets that start at committed
+ 1. Here the real stream and consumer (no broker: the consumer thread is a stand-in that is
never asked for records) are handed what the delivery loop hands them.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from aiokafka.structs import ConsumerRecord
from faust.events import Event
from faust.types import TP

from agentaudit.settings import Settings
from stream_jobs.runtime import BatchMessage, FastConsumer, make_app, source_topic

EVENTS = TP("events", 0)


class _Thread:
    """The consumer thread (aiokafka's side), never asked for records here."""

    beacon = None  # enough of a mode Service to be the consumer's dependency

    def assignment(self) -> set[TP]:
        return {EVENTS}


def _app(tmp_path: Path) -> tuple[Any, FastConsumer, Any]:
    settings = Settings(kafka_bootstrap="127.0.0.1:1", data_dir=tmp_path, partitions=1)
    app = make_app(settings, app_id="skip")
    topic = source_topic(app, EVENTS.topic, batched=True)

    class Stubbed(FastConsumer):
        def _new_consumer_thread(self) -> Any:
            return _Thread()

    app.transport.Consumer = Stubbed
    consumer = app.consumer
    assert isinstance(consumer, Stubbed)
    app.flow_control.resume()
    # as the conductor does for a subscribed topic whose channel acks
    app.topics._acking_topics.add(EVENTS.topic)  # noqa: SLF001
    return app, consumer, topic.stream()


def _handed(app: Any, consumer: FastConsumer, first: int, last: int) -> Event:
    """A polled batch of offsets first..last, as the delivery loop hands it to the stream."""
    records = [
        ConsumerRecord(EVENTS.topic, 0, o, 0, 0, None, b"v", None, 0, 1, ())
        for o in range(first, last + 1)
    ]
    message = BatchMessage.of(EVENTS, records, app.consumer_generation_id)
    consumer.holds.handed(message)
    return Event(app, None, message.value, {}, message)


async def test_a_skipped_batch_is_released_and_not_committed_over(tmp_path: Path) -> None:
    app, consumer, stream = _app(tmp_path)
    consumer._committed_offset[EVENTS] = 10  # noqa: SLF001 (offsets 0-9 applied and committed)
    # the delivery loop's read offset was 9 and the next delivery starts at 20: its gap
    await consumer._add_gap(EVENTS, 10, 19)  # noqa: SLF001
    stream.channel.queue.put_nowait(_handed(app, consumer, 20, 29))
    takes = stream.take_events(10, within=0.01)
    skipped = await takes.__anext__()
    assert [e.message.first_offset for e in skipped] == [20]
    stream.skip(skipped)  # the fence: past a hole, seeking back to 10
    asking = asyncio.create_task(takes.__anext__())  # the body asks for the next list
    try:
        await asyncio.sleep(0)  # it runs up to its wait for records: the last list is done
        assert not skipped[0].message.acked
        assert consumer.holds.waiting(EVENTS) == 0  # released: the partition is fetched
        assert consumer._new_offset(EVENTS) is None  # noqa: SLF001 (before: 30, past 10-29)
    finally:
        asking.cancel()
        with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
            await asking
        await takes.aclose()
