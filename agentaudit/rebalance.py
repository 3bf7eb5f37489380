"""A Kafka rebalance listener whose errors reach the consume loop instead of vanishing.

aiokafka catches any error raised in a `ConsumerRebalanceListener` callback, only logs it, and
goes on: after a failed assignment it fetches from Kafka's committed offsets as if the
listener had recovered the partitions (the sink would read unrecovered), or the loop waits
for a recovery that never comes (the notify receiver stalled silently). `RebalanceListener`
keeps the first such error instead; the consume loop calls `raise_failure` after every poll,
before it uses anything fetched, so the error reaches whoever runs the loop (and restarts it:
a new consumer re-joins the group and recovers again).

Used by the sink (`agentaudit.sink.assignment`) and the notify receiver
(`agentaudit.notify.receiver`).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

from aiokafka import ConsumerRebalanceListener, TopicPartition


class RebalanceListener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Calls `revoked` and `assigned`; keeps the first error either raises (see the module)."""

    def __init__(self) -> None:
        self.failure: Exception | None = None
        """The first error of a revoke or an assignment; None while there was none."""

    @abstractmethod
    async def revoked(self, revoked: list[TopicPartition]) -> None:
        """The partitions are taken away (before a rebalance)."""

    @abstractmethod
    async def assigned(self, assigned: list[TopicPartition]) -> None:
        """The partitions are this member's now. Runs synchronously up to its first await:
        no other task runs between aiokafka's assignment and that point."""

    async def on_partitions_revoked(self, revoked: Any) -> None:
        try:
            await self.revoked(list(revoked))
        except Exception as exc:  # noqa: BLE001 - kept and raised to the consume loop
            self.failure = self.failure or exc

    async def on_partitions_assigned(self, assigned: Any) -> None:
        try:
            await self.assigned(list(assigned))
        except Exception as exc:  # noqa: BLE001 - kept and raised to the consume loop
            self.failure = self.failure or exc

    def raise_failure(self) -> None:
        """Raise the first error of a revoke or an assignment, if there was one."""
        if self.failure is not None:
            raise self.failure
