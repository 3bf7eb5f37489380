"""`RebalanceListener` keeps the first error of its callbacks (aiokafka would only log it) for
the consume loop to raise; the callbacks still run after one failed."""

from __future__ import annotations

import pytest
from aiokafka import TopicPartition

from agentaudit.rebalance import RebalanceListener

TP = TopicPartition("t", 0)


class Scripted(RebalanceListener):
    def __init__(self, *errors: Exception | None) -> None:
        super().__init__()
        self.errors = list(errors)
        self.calls: list[tuple[str, list[TopicPartition]]] = []

    async def _call(self, what: str, tps: list[TopicPartition]) -> None:
        self.calls.append((what, tps))
        error = self.errors.pop(0)
        if error is not None:
            raise error

    async def revoked(self, revoked: list[TopicPartition]) -> None:
        await self._call("revoked", revoked)

    async def assigned(self, assigned: list[TopicPartition]) -> None:
        await self._call("assigned", assigned)


async def test_no_error_raises_nothing() -> None:
    listener = Scripted(None, None)
    await listener.on_partitions_revoked(set())
    await listener.on_partitions_assigned({TP})
    listener.raise_failure()
    assert listener.calls == [("revoked", []), ("assigned", [TP])]


async def test_the_first_error_is_kept_and_raised_every_time_it_is_asked() -> None:
    first, second = TimeoutError("revoke"), RuntimeError("assign")
    listener = Scripted(first, second)
    await listener.on_partitions_revoked({TP})  # aiokafka would log and go on: nothing raised
    await listener.on_partitions_assigned({TP})
    assert [c[0] for c in listener.calls] == ["revoked", "assigned"]
    for _ in range(2):
        with pytest.raises(TimeoutError) as raised:
            listener.raise_failure()
        assert raised.value is first
