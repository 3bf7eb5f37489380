"""Publish and read the two compacted topics operators steer the pipeline with.

- `settings.budgets_topic`: key = budget name, value = `Budget` JSON, empty value = removed.
- `settings.control_topic`: key = `Scope.key`, value = `ControlMessage` JSON. Operators
  publish UNBLOCK messages rather than tombstones so that the stream jobs and the store see
  the event (who lifted what, when).

Reads go through `agentaudit_sdk.compacted.read_latest` (the one compacted-topic reader): every
partition from the beginning to its end, the latest record per key is the state. Used by
the CLI, the demo and the tests; aiokafka is imported only when a function runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from pydantic import ValidationError

from agentaudit.broker import broker_unreachable, ensure_topics
from agentaudit.errors import UserError
from agentaudit.settings import Settings
from agentaudit_schemas.budgets import Budget
from agentaudit_schemas.records import (
    HEARTBEAT_KEY_PREFIX,
    ControlAction,
    ControlMessage,
    ControlReason,
    Scope,
    record_id,
)
from agentaudit_sdk.compacted import EndNotReached, Unreachable, read_latest
from agentaudit_sdk.control import InvalidRecord, decode_control
from agentaudit_sdk.kafka_config import KafkaSetupError, start
from agentaudit_sdk.kafka_config import producer as kafka_producer

log = logging.getLogger("agentaudit.control_plane")

MANUAL_RUNBOOK = "runbooks/ManualBlock.md"
DEFAULT_TIMEOUT_S = 15.0

T = TypeVar("T")


class BudgetNotFound(UserError):
    """`remove_budget` of a name that is not on the budgets topic."""


# -- writing --------------------------------------------------------------------------------


async def produce(
    settings: Settings, topic: str, records: Sequence[tuple[str, bytes | None]], timeout: float
) -> None:
    """Send every (key, value) in order and wait for all acknowledgements."""
    from aiokafka.errors import KafkaError

    await ensure_topics(settings, timeout)  # a fresh broker: create them compacted, not by default
    # No idempotence: the local broker rejects it, and a re-sent budget or control record is
    # harmless (the latest value per key is the state either way).
    connection = settings.kafka_connection()
    producer = kafka_producer(
        connection, client_id="agentaudit-cli", acks="all", enable_idempotence=False, linger_ms=5
    )
    try:
        await start(producer, connection, timeout)
    except KafkaSetupError as exc:
        raise broker_unreachable(settings, exc) from None
    try:
        async with asyncio.timeout(timeout):
            pending = [
                await producer.send(topic, value, key=key.encode()) for key, value in records
            ]
            await asyncio.gather(*pending)
    except (TimeoutError, KafkaError) as exc:
        raise UserError(
            f"publishing to {topic} on {settings.kafka_bootstrap} failed: {exc!r}; "
            "nothing is certain to be published, run the command again"
        ) from None
    finally:
        await _quietly_stop(producer)


async def _quietly_stop(client: Any) -> None:
    # The error that matters is the caller's; a failing close must not replace it.
    with contextlib.suppress(Exception):
        async with asyncio.timeout(5):
            await client.stop()


async def publish_budgets(
    settings: Settings, budgets: Iterable[Budget], *, timeout: float = DEFAULT_TIMEOUT_S
) -> None:
    """Add or replace each budget on the budgets topic (key = name)."""
    records = [(b.name, b.model_dump_json().encode()) for b in budgets]
    if records:
        await produce(settings, settings.budgets_topic, records, timeout)


async def remove_budget(
    settings: Settings, name: str, *, timeout: float = DEFAULT_TIMEOUT_S
) -> Budget:
    """Publish a tombstone for `name`; returns the budget removed. `BudgetNotFound` if the
    topic holds no budget of that name."""
    current = await read_budgets(settings, timeout=timeout)
    if name not in current:
        known = ", ".join(sorted(current)) or "none"
        raise BudgetNotFound(
            f"no budget named {name!r} (budgets: {known}); see `agentaudit budgets list`"
        )
    await produce(settings, settings.budgets_topic, [(name, None)], timeout)
    return current[name]


async def publish_control(
    settings: Settings, msg: ControlMessage, *, timeout: float = DEFAULT_TIMEOUT_S
) -> None:
    """Publish one control message on the control topic, keyed by its scope."""
    await produce(
        settings, settings.control_topic, [(msg.scope.key, msg.model_dump_json().encode())], timeout
    )


async def publish_unblock(
    settings: Settings, msg: ControlMessage, *, timeout: float = DEFAULT_TIMEOUT_S
) -> tuple[dict[str, ControlMessage], list[str]]:
    """Publish an UNBLOCK of `msg.scope` under its key and under every other record key whose
    latest message is a BLOCK of exactly that scope; returns the controls read before and the
    keys published to.

    The SDK keeps one state per record key (what compaction keeps), so a block another
    producer put under another key (the bare tenant id, say) was not lifted by an UNBLOCK
    under the scope's key: `agentaudit unblock` printed "unblocked" and the agents stayed
    blocked until someone wrote to that other key."""
    before = await read_controls(settings, timeout=timeout)
    keys = [msg.scope.key] + [
        key
        for key, held in before.items()
        if key != msg.scope.key
        and "\ufffd" not in key  # not UTF-8: cannot be written back as read
        and held.scope.key == msg.scope.key
        and held.action is ControlAction.BLOCK
    ]
    value = msg.model_dump_json().encode()
    await produce(settings, settings.control_topic, [(key, value) for key in keys], timeout)
    return before, keys


def manual_control(
    scope: Scope,
    action: ControlAction,
    *,
    issued_by: str,
    now: datetime,
    message: str | None = None,
    until: datetime | None = None,
) -> ControlMessage:
    """An operator's BLOCK or UNBLOCK of `scope` (reason `manual`, runbook ManualBlock)."""
    verb = "blocked" if action is ControlAction.BLOCK else "unblocked"
    return ControlMessage(
        control_id=record_id("manual", scope.key, action.value, now.isoformat(), issued_by),
        scope=scope,
        action=action,
        reason=ControlReason.MANUAL,
        message=message or f"{verb} by {issued_by}",
        runbook=MANUAL_RUNBOOK,
        issued_at=now,
        issued_by=issued_by,
        until=until if action is ControlAction.BLOCK else None,
    )


# -- reading --------------------------------------------------------------------------------


async def _read_latest(
    settings: Settings, topic: str, timeout: float, consumer_options: dict[str, Any]
) -> dict[str, bytes]:
    """Key → latest non-empty value of `topic`, read from the beginning to its end; keys
    whose latest record is a tombstone are absent. A missing topic reads as empty."""
    try:
        latest = await read_latest(
            settings.kafka_connection(),
            topic,
            timeout_s=timeout,
            client_id="agentaudit-cli",
            **consumer_options,
        )
    except Unreachable as exc:
        raise broker_unreachable(settings, exc) from None
    except EndNotReached as exc:
        raise UserError(str(exc)) from None
    return {key.decode("utf-8", "replace"): value for key, value in latest.items()}


def _decode(values: dict[str, bytes], parse: Callable[[bytes], T], topic: str) -> dict[str, T]:
    decoded: dict[str, T] = {}
    for key in sorted(values):
        try:
            decoded[key] = parse(values[key])
        except (ValidationError, InvalidRecord) as exc:  # another's bad record hides nothing
            why = f"{exc.error_count()} errors" if isinstance(exc, ValidationError) else str(exc)
            log.warning("skipped key %r on %s: not valid (%s)", key, topic, why)
    return decoded


async def read_budgets(
    settings: Settings, *, timeout: float = DEFAULT_TIMEOUT_S, **consumer_options: Any
) -> dict[str, Budget]:
    """The current budgets, name → `Budget`, sorted by name. `consumer_options` go to
    aiokafka's consumer (e.g. a small `max_partition_fetch_bytes` in tests)."""
    values = await _read_latest(settings, settings.budgets_topic, timeout, consumer_options)
    return _decode(values, Budget.model_validate_json, settings.budgets_topic)


async def read_controls(
    settings: Settings, *, timeout: float = DEFAULT_TIMEOUT_S, **consumer_options: Any
) -> dict[str, ControlMessage]:
    """The latest control message (block or unblock) per scope key, sorted by key."""
    values = await _read_latest(settings, settings.control_topic, timeout, consumer_options)
    # The jobs' heartbeats share the topic (issue 12): no scope, not an invalid control message.
    values = {k: v for k, v in values.items() if not k.startswith(HEARTBEAT_KEY_PREFIX)}
    # As the SDK reads them (`decode_control`): a newer pipeline's block with a field this
    # version does not know is in force for the agents. Parsed strictly, `agentaudit blocks`
    # did not list it and `unblock` said "(it was not blocked)".
    return _decode(values, decode_control, settings.control_topic)


def active_blocks(controls: dict[str, ControlMessage], now: datetime) -> list[ControlMessage]:
    """The BLOCK messages in force at `now` (no `until`, or `until` later), sorted by key."""
    return [
        msg
        for _, msg in sorted(controls.items())
        if msg.action is ControlAction.BLOCK and (msg.until is None or msg.until > now)
    ]
