"""`BatchMessage`: one poll's records of one partition as one faust message (the consumer
layer, `stream_jobs.runtime.consumer`, makes and acks them)."""

from __future__ import annotations

from typing import Any

from faust.types import TP
from faust.types.tuples import ConsumerMessage

__all__ = ["BatchMessage"]


class BatchMessage(ConsumerMessage):
    """All records one poll brought for one partition of a batched topic, as one faust message.

    `value` is the list of `(offset, value bytes, timestamp ms)` in offset order; `offset` is
    the last record's offset and `first_offset` the first's. Acking it acks every offset from
    `first_offset` to `offset` (`FastConsumer.ack`), so faust's commits, gaps, rebalances and
    generation checks work unchanged; only the per-record Event, queue hop and ack are gone.
    """

    __slots__ = ("first_offset", "holds_epoch")

    first_offset: int
    holds_epoch: int
    """`PartitionHolds`' epoch while it counts this batch as waiting; -1 otherwise."""

    @classmethod
    def of(cls, tp: TP, records: list[Any], generation_id: int | None) -> BatchMessage:
        last = records[-1]
        message = cls(
            tp.topic,
            tp.partition,
            last.offset,
            (last.timestamp or 0) / 1000.0,
            last.timestamp_type,
            None,
            None,
            [(r.offset, r.value, r.timestamp) for r in records],  # type: ignore[arg-type]
            None,
            0,
            0,
            tp,
            generation_id=generation_id,
        )
        message.first_offset = records[0].offset
        message.holds_epoch = -1
        return message
